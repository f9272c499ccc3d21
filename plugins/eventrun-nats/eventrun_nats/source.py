"""The ``nats`` trigger: a :class:`eventrun.abc.Poller` over a durable JetStream pull consumer.

Delivery contract, as this poller keeps it:

* **Consumer.** ``consumer`` is a durable pull consumer of ``stream`` with explicit acks,
  created on first start (``subjects`` as its filter, ``deliver_policy``, ``ack_wait``,
  ``max_ack_pending``; ``max_deliver`` unlimited, so JetStream never drops a message
  silently: the delivery cap is eventrun's, followed by ``on_failure``). An existing
  consumer is used as it is, after checking that it is a pull consumer with explicit acks.
  Replicas of the function share it: JetStream splits its messages among them.
* **poll** is one pull of up to ``min(max_records, fetch_max)`` messages that waits about
  a second (:mod:`eventrun_nats._pull`: nats-py's protocol without its task per message).
  It is shielded from cancellation (for at most the fetch wait plus a grace): messages
  the server already sent for it are returned, so a shutdown releases them instead of
  leaving them to ``ack_wait``; so are messages that arrived after it returned (nak'd on
  close, kept alive with the held ones meanwhile). A redelivery of a message this poller
  still holds (its ``ack_wait`` ran out during a broker outage) is not handed out twice:
  the held record just takes the newest delivery for its ack.
* **Order.** ``ordering: subject`` (default) makes the poller ordered with
  ``Record.shard`` = subject (or one of ``subject_lanes`` hashed lanes), so the dispatcher
  keeps one lane per subject: one batch of a subject at a time, a failing batch retried in
  place with backoff, then ``on_failure``. ``ordering: none`` is the queue contract: every
  message settles on its own and a failed one is released with ``nak(delay)``.
* **ack** sends ``+ACK`` for exactly the given messages (JetStream acknowledges each on
  its own: ``acks_each_record``), **release** ``-NAK`` with the dispatcher's delay, in
  stream order (JetStream redelivers in the order of the naks, so a subject stays in order),
  **extend** ``+WPI`` (in progress) for every held message every third of ``ack_wait``,
  so a long handler or a deep buffer never lets JetStream redeliver to another replica.
  Each call ends with a flush (a PING/PONG round trip), so a returned ack reached the
  server; a connection problem raises SourceUnavailable and the dispatcher retries.
* ``Record.attempt`` is JetStream's delivery count (``deliveredCount`` in the event).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import api

from eventrun.abc import Record, SourceSpec
from eventrun.exceptions import SourceError, SourceUnavailable
from eventrun_nats._client import connect, redact, server_url, translate
from eventrun_nats._pull import Puller, PullFailed
from eventrun_nats._records import batch_event, batch_info, to_record

__all__ = ["NatsPoller", "create"]

log = structlog.get_logger("eventrun_nats.source")

FETCH_WAIT_S = 1.0
FETCH_GRACE_S = 10.0
FLUSH_TIMEOUT_S = 5
STATS_INTERVAL_S = 5.0
_ACK = b"+ACK"
_NAK = b"-NAK"
_WPI = b"+WPI"
_POLICIES = {
    "all": api.DeliverPolicy.ALL,
    "new": api.DeliverPolicy.NEW,
    "last_per_subject": api.DeliverPolicy.LAST_PER_SUBJECT,
}
_STREAM_NOT_FOUND = 10059


def _seq(record: Record) -> int:
    return int(record.item_id)


def create(spec: SourceSpec) -> NatsPoller:
    """Entry point ``eventrun.sources: nats``."""
    return NatsPoller(spec)


class NatsPoller:
    """Poller for one durable pull consumer of a JetStream stream."""

    acks_each_record = True  # JetStream acknowledges each message on its own

    def __init__(self, spec: SourceSpec) -> None:
        cfg = spec.config
        self.spec = spec
        self.ordered: bool = cfg.ordering == "subject"
        self.stream: str = cfg.stream
        self.consumer: str = cfg.consumer
        self.subjects: list[str] = list(cfg.subjects)
        self._lanes: int | None = cfg.subject_lanes if self.ordered else None
        self._fetch_max: int = cfg.fetch_max
        self._ack_wait: float = float(cfg.ack_wait)
        self._deliver_policy = _POLICIES[cfg.deliver_policy]
        self._max_ack_pending: int = cfg.max_ack_pending
        self.heartbeat_interval_s: float = max(0.5, self._ack_wait / 3)
        self._url = server_url(cfg, spec.connection)
        self._where = redact(self._url)
        self._arn = f"{self._where}/{self.stream}/{self.consumer}"
        self._nc: Client | None = None
        self._sub: Puller | None = None
        self._held: dict[int, Record] = {}
        self._stats: dict[str, float] = {}
        self._next_stats = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._nc = await connect(self._url, name=f"eventrun {self.spec.name}")
        try:
            await self._bind()
        except BaseException:
            await self._close()
            raise
        log.info(
            "nats.consumer_bound",
            trigger=self.spec.name,
            server=self._where,
            stream=self.stream,
            consumer=self.consumer,
            ordered=self.ordered,
            ack_wait_s=self._ack_wait,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_TIMEOUT_S):
            try:
                backlog = self._sub.take_backlog() if self._sub is not None else []
                if (self._held or backlog) and nc.is_connected:
                    # given back at once rather than after ack_wait, in stream order
                    for record in sorted(self._held.values(), key=_seq):
                        await nc.publish(record.token.reply, _NAK)  # type: ignore[attr-defined]
                    for msg in backlog:
                        await nc.publish(msg.reply, _NAK)
                    self._held.clear()
                    await nc.flush(timeout=FLUSH_TIMEOUT_S)
            except Exception as err:  # left to ack_wait: redelivered, not lost
                log.warning("nats.release_deferred", trigger=self.spec.name, error=str(err))
            finally:
                await nc.close()

    async def _bind(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream()
        with translate("consumer lookup", self._where):
            try:
                info = await js.consumer_info(self.stream, self.consumer)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == _STREAM_NOT_FOUND:
                    raise self._no_stream(exc) from exc
                info = await self._create(js)
        config = info.config
        if config.ack_policy != api.AckPolicy.EXPLICIT or config.deliver_subject:
            raise SourceError(
                f"{self.spec.name}: NATS consumer {self.consumer!r} of stream {self.stream!r}"
                " is not a pull consumer with explicit acks; delete it or name another"
                " consumer (eventrun creates it as needed)"
            )
        if config.ack_wait:
            self._ack_wait = float(config.ack_wait)
            self.heartbeat_interval_s = max(0.5, self._ack_wait / 3)
        self._sub = Puller(self._nc, self.stream, self.consumer)
        with translate("pull subscribe", self._where):
            await self._sub.start()

    async def _create(self, js: Any) -> Any:
        config = api.ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=self._deliver_policy,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            max_ack_pending=self._max_ack_pending,
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        elif self.subjects:
            config.filter_subjects = self.subjects
        try:
            info = await js.add_consumer(self.stream, config=config)
        except nats.js.errors.NotFoundError as exc:
            raise self._no_stream(exc) from exc
        except nats.js.errors.BadRequestError as exc:
            raise SourceError(
                f"{self.spec.name}: NATS refused to create consumer {self.consumer!r} on"
                f" stream {self.stream!r} (subjects {self.subjects}): {exc.description}"
                " (several subjects need nats-server 2.10 or later)"
            ) from exc
        log.info("nats.consumer_created", stream=self.stream, consumer=self.consumer)
        return info

    def _no_stream(self, exc: Exception) -> SourceError:
        return SourceError(
            f"{self.spec.name}: NATS stream {self.stream!r} does not exist at {self._where};"
            f" create it (nats stream add {self.stream} --subjects ...) or fix `stream`"
        )

    # -- polling -------------------------------------------------------------------------

    async def poll(self, max_records: int) -> Sequence[Record]:
        """One fetch of up to ``max_records`` messages (at most ``fetch_max``)."""
        if self._sub is None:
            raise SourceUnavailable(f"{self.spec.name}: poll() outside 'async with'")
        count = max(1, min(max_records, self._fetch_max))
        await anyio.lowlevel.checkpoint_if_cancelled()  # the shield below is not one
        with anyio.CancelScope(shield=True) as scope:  # see the module docstring
            scope.deadline = anyio.current_time() + FETCH_WAIT_S + FETCH_GRACE_S
            msgs = await self._fetch(count)
            if time.monotonic() >= self._next_stats:
                await self._refresh_stats()
        if scope.cancelled_caught:
            raise SourceUnavailable(f"{self.spec.name}: NATS fetch at {self._where} hung")
        records: list[Record] = []
        held = self._held
        for msg in msgs:
            record = to_record(msg, ordered=self.ordered, lanes=self._lanes)
            old = held.get(record.item_id)
            if old is not None:  # redelivered while we hold it: ack the newest delivery
                old.token = msg
                continue
            held[record.item_id] = record
            records.append(record)
        return records

    async def _fetch(self, count: int) -> list[Any]:
        assert self._sub is not None
        try:
            with translate("fetch", self._where):
                return await self._sub.pull(count, FETCH_WAIT_S)
        except PullFailed as exc:  # consumer deleted, leadership change...
            raise SourceUnavailable(
                f"{self.spec.name}: NATS fetch from {self.stream}/{self.consumer} at"
                f" {self._where}: {exc}"
            ) from exc

    # -- settling ------------------------------------------------------------------------

    async def _send(self, records: Sequence[Record], payload: bytes, action: str) -> None:
        nc = self._nc
        if nc is None:
            raise SourceUnavailable(f"{self.spec.name}: {action} outside 'async with'")
        with translate(action, self._where):
            publish = nc.publish
            for record in records:
                await publish(record.token.reply, payload)  # type: ignore[attr-defined]
            await nc.flush(timeout=FLUSH_TIMEOUT_S)

    async def ack(self, records: Sequence[Record]) -> None:
        """``+ACK`` exactly these messages."""
        await self._send(records, _ACK, "ack")
        held = self._held
        for record in records:
            held.pop(record.item_id, None)

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """``-NAK`` the messages: JetStream redelivers them after ``delay_s``."""
        payload = _NAK
        if delay_s > 0:
            payload += b' {"delay": %d}' % int(delay_s * 1e9)
        # JetStream redelivers in the order of the naks: stream order keeps subjects in order
        records = sorted(records, key=_seq)
        await self._send(records, payload, "nak")
        held = self._held
        for record in records:
            held.pop(record.item_id, None)

    async def extend(self, records: Sequence[Record], seconds: float) -> None:
        """``+WPI`` (in progress): JetStream restarts each message's ``ack_wait``."""
        held = self._held
        await self._send([r for r in records if r.item_id in held], _WPI, "in-progress ack")
        if self._sub is not None and self._nc is not None:  # delivered, not yet polled
            with translate("in-progress ack", self._where):
                for msg in self._sub.backlog():
                    await self._nc.publish(msg.reply, _WPI)

    # -- shapes and gauges ---------------------------------------------------------------

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        """``{"eventSource": "nats:jetstream", "eventSourceArn", "records": [...]}``."""
        return batch_event(records, self._arn)

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(records, self.stream, self.consumer)

    def statistics(self) -> Mapping[str, float]:
        """``lag`` (messages not yet delivered), ``ack_pending``, ``redelivered`` and
        ``held`` (by this poller), refreshed by ``poll`` every few seconds."""
        return {**self._stats, "held": float(len(self._held))}

    async def _refresh_stats(self) -> None:
        self._next_stats = time.monotonic() + STATS_INTERVAL_S
        assert self._nc is not None
        try:
            info = await self._nc.jetstream().consumer_info(self.stream, self.consumer)
        except Exception as exc:  # gauges are best effort
            log.debug("nats.stats_failed", trigger=self.spec.name, error=str(exc))
            return
        self._stats = {
            "lag": float(info.num_pending or 0),
            "ack_pending": float(info.num_ack_pending or 0),
            "redelivered": float(info.num_redelivered or 0),
        }
