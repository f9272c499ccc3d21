"""Asynchronous invocations (``InvocationType: Event``, cron, file-watch, ``function:``).

An event is first put durably in the store queue ``async:FUNCTION`` (so a crash after the
202 loses nothing), then leased, invoked and acknowledged. A failed invocation is retried
``maximum_retry_attempts`` times (Lambda: 0..2), waiting ``retry_delay`` and then twice that
(Lambda's 1 min / 2 min); an event older than ``maximum_event_age`` is not invoked again.
Either way Lambda's destination record goes to ``on_failure`` (``RetriesExhausted`` /
``EventAgeExceeded``), or to ``on_success`` (``Success``) after a success. With no
``on_failure`` configured, failures go to the function's default DLQ ``local:FUNCTION-dlq``
rather than being discarded as Lambda would.

Pipelines: an entry queued for a trigger (``meta["trigger"]``: cron, file-watch, or a DLQ
redrive of a stream record) whose trigger names ``on_success`` has its handler's outputs
(:mod:`eventrun.dispatch._outputs`; keyed by ``meta["key"]`` when given) published there before the
entry is acknowledged, like a poller trigger's outputs.

Leases are sized to the function's timeout, so an entry leased by a daemon that dies is
invoked again by whichever daemon leases it next (at-least-once). While a destination
record is being published the entry's lease is renewed every half lease: a destination
that refuses for a while (a DLQ at its cap, a broker down; the router retries until it
accepts) keeps the entry in the queue, unacknowledged, without it being invoked again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from eventrun.abc import Clock, OutMessage
from eventrun.dispatch._destinations import Publisher
from eventrun.dispatch._outputs import pipeline_outputs
from eventrun.dispatch._records import async_destination_record
from eventrun.exceptions import StoreError
from eventrun.observe import async_span, trace_attributes
from eventrun.store import QueueEntry, Store

__all__ = ["AsyncInvoker", "AsyncSettings", "default_dlq"]

log = structlog.get_logger("eventrun.async")
_ENCODER = msgspec.json.Encoder()


def default_dlq(function: str) -> str:
    return f"local:{function}-dlq"


@dataclass(slots=True, frozen=True)
class AsyncSettings:
    function: str
    concurrency: int
    timeout_s: float
    maximum_retry_attempts: int = 2
    maximum_event_age_s: float = 21600.0
    retry_delay_s: float = 60.0
    idle_poll_s: float = 0.5
    region: str = "us-east-1"


@dataclass(slots=True)
class AsyncStats:
    queued: int = 0
    invoked: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0


class AsyncInvoker:
    """Drains the ``async:FUNCTION`` queue of one function."""

    def __init__(
        self,
        settings: AsyncSettings,
        invoke: Any,
        store: Store,
        *,
        clock: Clock,
        on_success: Publisher | None,
        on_failure: Publisher,
        outputs: Mapping[str, Publisher] | None = None,
    ) -> None:
        self._s = settings
        self._invoke = invoke
        self._store = store
        self._clock = clock
        self._on_success = on_success
        self._on_failure = on_failure
        self._outputs = dict(outputs or {})
        self.queue = f"async:{settings.function}"
        self._kick = anyio.Event()
        self._limiter = anyio.CapacityLimiter(max(1, settings.concurrency))
        self._stopping = False
        self._in_flight = 0
        self._running: set[str] = set()
        """Entries being invoked here: one leased again (its lease ran out by the wall
        clock: a clock stepped forward, a store unreachable while held) is not run twice."""
        self._idle = anyio.Event()
        self.stats = AsyncStats()
        self._log = log.bind(function=settings.function)

    async def enqueue(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        trigger: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue an invocation durably; return its request id. ``trigger`` (a trigger id,
        ``FUNCTION/KIND[INDEX]``) routes the result to that trigger's ``on_success``;
        ``meta`` is kept with the entry (``trigger`` and ``key`` there count too)."""
        rid = request_id or str(uuid.uuid4())
        entry_meta = {**(meta or {}), "request_id": rid, **trace_attributes()}
        if trigger:
            entry_meta["trigger"] = trigger
        await self._store.put(self.queue, [payload], meta=entry_meta)
        self.stats.queued += 1
        self._kick.set()
        return rid

    def stop_intake(self) -> None:
        """Stop leasing new entries (shutdown); in-flight invocations finish."""
        self._stopping = True
        self._kick.set()

    async def drain(self) -> None:
        """Wait until no invocation is in flight."""
        while self._in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        lease_s = self._s.timeout_s + 5.0
        failures = 0
        async with anyio.create_task_group() as tg:
            task_status.started()
            while not self._stopping:
                free = int(self._limiter.available_tokens)
                entries: list[QueueEntry] = []
                if free:
                    try:
                        entries = await self._store.lease(
                            self.queue, now=self._clock.time(), limit=free, lease_s=lease_s
                        )
                        failures = 0
                    except StoreError as exc:
                        failures += 1
                        self._log.warning("store.lease_failed", error=str(exc))
                        await anyio.sleep(min(10.0, 0.1 * 2**failures))
                        continue
                for entry in entries:
                    if entry.id in self._running:
                        self._log.warning("async.lease_expired_in_flight", entry=entry.id)
                        continue
                    self._running.add(entry.id)
                    borrower = object()
                    await self._limiter.acquire_on_behalf_of(borrower)
                    tg.start_soon(self._handle, entry, borrower)
                if not entries or not free:
                    self._kick = anyio.Event()
                    with anyio.move_on_after(self._s.idle_poll_s):
                        await self._kick.wait()

    async def _handle(self, entry: QueueEntry, borrower: object) -> None:
        self._in_flight += 1
        try:
            with async_span(self._s.function, entry.meta):
                await self._process(entry)
        except StoreError as exc:
            # the store is down: the entry's lease runs out and it is invoked again
            # (at-least-once), rather than taking the daemon down with it
            self._log.warning("async.store_failed", request_id=entry.id, error=str(exc))
        finally:
            self._running.discard(entry.id)
            self._in_flight -= 1
            self._limiter.release_on_behalf_of(borrower)
            self._kick.set()
            if not self._in_flight:
                self._idle.set()

    async def _process(self, entry: QueueEntry) -> None:
        rid = str(entry.meta.get("request_id") or entry.id)
        now = self._clock.time()
        if now - entry.enqueued_at > self._s.maximum_event_age_s:
            self.stats.expired += 1
            await self._finish(entry, rid, "EventAgeExceeded", entry.attempts, None, None)
            return
        self.stats.invoked += 1
        result = await self._invoke(entry.payload, request_id=rid)
        attempts = entry.attempts + 1
        response = _decode(result.payload)
        if result.ok:
            self.stats.succeeded += 1
            await self.publish_outputs(
                entry.meta.get("trigger"), result.payload, entry.meta.get("key")
            )
            await self._finish(entry, rid, "Success", attempts, response, None)
            return
        if attempts > self._s.maximum_retry_attempts:
            self.stats.failed += 1
            await self._finish(
                entry, rid, "RetriesExhausted", attempts, response, result.error_type
            )
            return
        delay = self._s.retry_delay_s * 2 ** (attempts - 1)
        self.stats.retried += 1
        self._log.info("async.retry", request_id=rid, attempt=attempts, retry_in_s=delay)
        await self._store.retry(
            self.queue, entry.id, available_at=self._clock.time() + delay, attempts=attempts
        )

    async def publish_outputs(self, trigger: Any, payload: bytes, key: Any = None) -> None:
        """Publish a successful result's pipeline outputs to ``trigger``'s ``on_success``
        (nothing when that trigger has none); returns once they are delivered."""
        publisher = self._outputs.get(str(trigger or ""))
        if publisher is None:
            return
        messages = pipeline_outputs(payload, [None if key is None else str(key)], [0])
        if messages:
            await publisher.publish(messages)

    async def _finish(
        self,
        entry: QueueEntry,
        rid: str,
        condition: str,
        invoke_count: int,
        response: Any,
        function_error: str | None,
    ) -> None:
        target = self._on_failure if condition != "Success" else self._on_success
        if target is not None:
            record = async_destination_record(
                request_id=rid,
                function=self._s.function,
                condition=condition,
                invoke_count=invoke_count,
                request_payload=_decode(entry.payload),
                response_payload=response,
                function_error="Unhandled" if function_error else None,
                region=self._s.region,
            )
            await self._publish_held(entry, target, [OutMessage(payload=_ENCODER.encode(record))])
        if condition != "Success":
            self._log.warning(
                "async.failed", request_id=rid, condition=condition, invoke_count=invoke_count
            )
        await self._store.ack(self.queue, [entry.id])

    async def _publish_held(
        self, entry: QueueEntry, target: Publisher, messages: list[OutMessage]
    ) -> None:
        """Publish while :meth:`_hold` keeps ``entry`` leased."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._hold, entry)
            await target.publish(messages)
            tg.cancel_scope.cancel()

    async def _hold(self, entry: QueueEntry) -> None:
        """Every half lease, hide ``entry`` for another lease (if this daemon dies, it
        comes back one lease later, as any leased entry does)."""
        lease_s = self._s.timeout_s + 5.0
        while True:
            await self._clock.sleep_until(self._clock.monotonic() + lease_s / 2)
            try:
                await self._store.retry(
                    self.queue,
                    entry.id,
                    available_at=self._clock.time() + lease_s,
                    attempts=entry.attempts,
                )
            except StoreError as exc:
                self._log.warning("async.hold_failed", request_id=entry.id, error=str(exc))


def _decode(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload.decode(errors="replace")
