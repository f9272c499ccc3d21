"""The ``rabbitmq`` trigger: a queue-contract :class:`eventrun.abc.Poller` over one queue.

Delivery contract (what the dispatcher may rely on):

* **Consume with manual acks.** ``basic.consume`` with ``no_ack=False`` and a prefetch
  of four batches (the dispatcher's read-ahead) unless ``prefetch`` is set. Deliveries
  wait in a local buffer until ``poll`` takes them, in delivery order.
* **ack** acknowledges exactly the given records: one ``basic.ack(multiple=True)`` for
  the longest run of the channel's oldest unsettled deliveries that are all being
  acknowledged, single acks for the rest (:mod:`eventrun_rabbitmq._tags`), never a
  delivery it was not given.
* **release(records, delay_s)** holds the deliveries (unacknowledged: no other consumer
  gets them) for ``delay_s`` and then ``basic.reject(requeue=True)``s them, so a failing
  message waits out its backoff without blocking the queue behind it. A release with a
  delay is a failed attempt: quorum queues count it in ``x-delivery-count`` (only a
  reject increments it on current RabbitMQ); for classic queues this poller counts it
  itself (by ``messageId``, else a hash of the body; lost on restart). ``Record.attempt``
  is one more than the larger count, and the dispatcher sends a message whose attempt
  reached ``maximum_retry_attempts + 1`` to ``on_failure``, then acks it. A release
  without a delay (shutdown) is not a failure: the deliveries are left to the broker,
  which requeues them when the channel closes (or they are rejected after
  ``RETURN_GRACE_S`` if it stays open).
* **Reconnection.** A lost connection makes ``poll`` raise SourceUnavailable once; the
  next ``poll`` reconnects (the runtime backs off between tries). The broker requeues
  every unacknowledged delivery of the lost channel, so nothing is lost: records of the
  old channel still in the dispatcher are redelivered (acks of them are dropped, as
  their delivery tags mean nothing on the new channel).
* Order: with ``maximum_concurrency: 1`` (the default, Lambda's) one batch runs at a
  time, in queue order; a retried message comes back after the ones behind it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, cast

import anyio
import structlog
from anyio.abc import TaskGroup

from eventrun.abc import JSON, Record, SourceSpec
from eventrun.exceptions import SourceUnavailable
from eventrun_rabbitmq import _client
from eventrun_rabbitmq._events import EventBuilder
from eventrun_rabbitmq._tags import TagLedger
from eventrun_rabbitmq.config import redact_url, url_of, vhost_of

__all__ = ["RETURN_GRACE_S", "RabbitMQPoller", "create"]

log = structlog.get_logger("eventrun_rabbitmq.source")

POLL_WAIT_S = 1.0
RETURN_GRACE_S = 5.0
STATS_INTERVAL_S = 5.0
MAX_COUNTED = 100_000
"""Most messages whose failed attempts a classic-queue poller remembers."""


def create(spec: SourceSpec) -> RabbitMQPoller:
    """Entry point ``eventrun.sources: rabbitmq``."""
    return RabbitMQPoller(spec)


class RabbitMQPoller:
    """A :class:`eventrun.abc.Poller` for one RabbitMQ queue (queue contract)."""

    ordered = False

    def __init__(self, spec: SourceSpec) -> None:
        cfg = spec.config
        self.spec = spec
        self.queue: str = cfg.queue
        self._url = url_of(cfg, spec.connection)
        self._where = f"{spec.name}: queue {self.queue!r} at {redact_url(self._url)}"
        batch = int(getattr(cfg, "batch_size", 100))
        self.prefetch: int = getattr(cfg, "prefetch", None) or min(65535, max(4 * batch, 400))
        self.max_receive_count: int | None = getattr(cfg, "max_receive_count", None)
        self.events = EventBuilder(self.queue, vhost_of(self._url), _client.broker_arn(self._url))
        self._conn: Any = None
        self._channel: Any = None
        self._generation = 0
        self._ledger = TagLedger()
        self._buffer: deque[Any] = deque()
        self._arrived = anyio.Event()
        self._lost: BaseException | None = None
        self._watch: Any = None
        self._failures: OrderedDict[object, int] = OrderedDict()
        self._held: list[tuple[float, int, list[int]]] = []  # (due, generation, tags)
        self._held_wake = anyio.Event()
        self._tg: TaskGroup | None = None
        self._stats: dict[str, float] = {}
        self._stats_at = -math.inf
        self.stale_acks = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._connect()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._reject_when_due)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            # Unacknowledged deliveries (held, buffered, in flight) go back to the queue
            # when the channel closes: nothing is acknowledged here.
            conn, self._conn, self._channel = self._conn, None, None
            if self._watch is not None:
                self._watch.cancel()
            await _client.close_quietly(conn)

    async def _connect(self) -> None:
        conn = await _client.connect(self._url, name=f"eventrun {self.spec.name}")
        try:
            channel = await conn.channel(publisher_confirms=False)
            await channel.basic_qos(prefetch_count=self.prefetch)
            declared = await channel.queue_declare(self.queue, passive=True)
            self._generation += 1
            self._ledger = TagLedger()
            self._buffer.clear()
            self._lost = None
            self._conn, self._channel = conn, channel
            generation = self._generation
            self._watch = conn.closing  # an observer future of its own (aiormq)
            self._watch.add_done_callback(lambda f: self._on_lost(f, generation))
            await channel.basic_consume(self.queue, self._on_message, no_ack=False)
        except Exception as exc:
            self._conn = self._channel = None
            await _client.close_quietly(conn)
            raise _client.translate(exc, self._where) from exc
        self._stats["queue_depth"] = float(declared.message_count or 0)
        log.info(
            "rabbitmq.connected",
            trigger=self.spec.name,
            queue=self.queue,
            broker=redact_url(self._url),
            prefetch=self.prefetch,
            generation=self._generation,
        )

    def _on_lost(self, future: Any, generation: int) -> None:
        if future.cancelled() or generation != self._generation:
            return
        self._lost = future.exception() or ConnectionError("connection closed")
        self._arrived.set()

    def _is_down(self) -> bool:
        conn, channel = self._conn, self._channel
        return self._lost is not None or conn.is_closed or channel is None or channel.is_closed

    async def _on_message(self, message: Any) -> None:
        # aiormq runs this as a task per delivery, in delivery order: no await before
        # the append, so the buffer keeps that order
        if message.channel is not self._channel:
            return  # a delivery of a channel already replaced: the broker requeued it
        self._ledger.delivered(message.delivery.delivery_tag)
        self._buffer.append(message)
        self._arrived.set()

    async def _ensure_connected(self) -> None:
        if self._conn is not None and not self._is_down():
            return
        if self._conn is not None:
            reason = _client.describe(self._lost) if self._lost else "closed"
            old, self._conn, self._channel = self._conn, None, None
            if self._watch is not None:
                self._watch.cancel()
            self._held.clear()
            log.warning("rabbitmq.connection_lost", trigger=self.spec.name, error=reason)
            await _client.close_quietly(old)
            raise SourceUnavailable(f"{self._where}: connection lost ({reason})")
        await self._connect()

    # -- polling -----------------------------------------------------------------------

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Up to ``max_records`` deliveries, waiting at most about a second for one."""
        await self._ensure_connected()
        if not self._buffer:
            self._arrived = anyio.Event()
            with anyio.move_on_after(POLL_WAIT_S):
                await self._arrived.wait()
            if self._is_down():
                await self._ensure_connected()
        buffer, take = self._buffer, min(max_records, len(self._buffer))
        generation, failures, build = self._generation, self._failures, self.events.record
        records = []
        for _ in range(take):
            message = buffer.popleft()
            seen = 0
            if failures:  # a classic queue's message that failed before
                key = _key_of(message.header.properties.message_id, message.body)
                seen = failures.get(key, 0)
            records.append(build(message, (generation, message.delivery.delivery_tag), seen))
        if anyio.current_time() - self._stats_at >= STATS_INTERVAL_S:
            await self._refresh_stats()
        return records

    async def _refresh_stats(self) -> None:
        self._stats_at = anyio.current_time()
        try:
            declared = await self._channel.queue_declare(self.queue, passive=True)
        except Exception as exc:
            log.debug("rabbitmq.stats_failed", trigger=self.spec.name, error=str(exc))
            return
        self._stats["queue_depth"] = float(declared.message_count or 0)

    # -- settling ----------------------------------------------------------------------

    def _current_tags(self, records: Sequence[Record]) -> list[int]:
        tags = []
        for record in records:
            generation, tag = cast(tuple[int, int], record.token)
            if generation == self._generation:
                tags.append(tag)
            else:
                self.stale_acks += 1
        return tags

    async def ack(self, records: Sequence[Record]) -> None:
        """Acknowledge exactly ``records`` (see the module docstring)."""
        if self._failures:
            for record in records:
                self._failures.pop(_record_key(record), None)
        tags = self._current_tags(records)
        if len(tags) < len(records):
            log.warning(
                "rabbitmq.ack_stale",
                trigger=self.spec.name,
                size=len(records) - len(tags),
                note="delivered on a lost connection; the broker redelivers them",
            )
        plan = self._ledger.plan_ack(tags)
        channel = self._channel
        if channel is None or (plan.multiple_upto is None and not plan.singles):
            return
        try:
            if plan.multiple_upto is not None:
                await channel.basic_ack(plan.multiple_upto, multiple=True)
            for tag in plan.singles:
                await channel.basic_ack(tag)
        except Exception as exc:
            raise _client.translate(exc, f"{self._where}: basic.ack") from exc

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Hold the deliveries for ``delay_s``, then reject them with requeue."""
        if delay_s > 0:
            for record in records:
                key = _record_key(record)
                self._failures[key] = max(self._failures.get(key, 0), record.attempt)
                self._failures.move_to_end(key)
            while len(self._failures) > MAX_COUNTED:
                self._failures.popitem(last=False)
        tags = self._current_tags(records)
        if tags:
            wait = delay_s if delay_s > 0 else RETURN_GRACE_S
            self._held.append((anyio.current_time() + wait, self._generation, tags))
            self._held_wake.set()

    async def _reject_when_due(self) -> None:
        while True:
            if not self._held:
                self._held_wake = anyio.Event()
                await self._held_wake.wait()
                continue
            now = anyio.current_time()
            due = [h for h in self._held if h[0] <= now]
            if not due:
                self._held_wake = anyio.Event()
                with anyio.move_on_after(min(h[0] for h in self._held) - now):
                    await self._held_wake.wait()
                continue
            self._held = [h for h in self._held if h[0] > now]
            for _, generation, tags in due:
                await self._reject(generation, tags)

    async def _reject(self, generation: int, tags: list[int]) -> None:
        channel = self._channel
        if generation != self._generation or channel is None:
            return  # that channel is gone: the broker requeued its deliveries
        for tag in self._ledger.settle(tags):
            try:
                await channel.basic_reject(tag, requeue=True)
            except Exception as exc:  # closed meanwhile: requeued by the broker anyway
                log.warning("rabbitmq.reject_failed", trigger=self.spec.name, error=str(exc))
                return

    # -- shapes and gauges -------------------------------------------------------------

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        """Lambda's ``aws:rmq`` event (:mod:`eventrun_rabbitmq._events`)."""
        return self.events.batch_event(records)

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        return self.events.batch_info(records)

    def statistics(self) -> Mapping[str, float]:
        """``queue_depth`` (ready messages, refreshed by poll every few seconds),
        ``buffered`` (delivered, not yet polled), ``unacked`` and ``held`` (for retry)."""
        stats = dict(self._stats)
        stats["buffered"] = float(len(self._buffer))
        stats["unacked"] = float(len(self._ledger))
        stats["held"] = float(sum(len(h[2]) for h in self._held))
        return stats


def _key_of(message_id: str | None, body: bytes) -> object:
    if message_id:
        return message_id
    return hashlib.blake2b(body, digest_size=16).digest()


def _record_key(record: Record) -> object:
    return _key_of(record.item_id if isinstance(record.item_id, str) else None, record.data)
