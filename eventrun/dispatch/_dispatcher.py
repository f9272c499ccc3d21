"""The dispatcher: Lambda's event-source-mapping contract for one poller trigger.

One :class:`TriggerDispatcher` drives one :class:`~eventrun.abc.Poller`. It is the single
shared polling loop (backoff and reconnect written once) and everything after it:

* **Lanes.** Ordered pollers (streams): each shard is a lane run by
  ``parallelization_factor`` lane loops; with one loop a shard runs one batch at a time, so
  order holds per shard; with more, a record key is in at most one running batch
  (:class:`~eventrun.dispatch._lanes.KeyedLane`), so order holds per key. Unordered pollers
  (queues): a pool of lanes shares the records; records with a ``shard`` (SQS FIFO
  groups) are pinned to one lane by ``crc32(shard)`` so a group stays in order.
* **Batching.** A lane flushes at ``batch_size`` records, the 6 MB payload limit, or
  ``maximum_batching_window`` after its first record arrived.
* **Outcomes.** Streams: a failing batch blocks its lane and is retried with exponential
  backoff and jitter; ``bisect_batch_on_function_error`` splits it (splits do not count as
  retries); after ``maximum_retry_attempts`` or ``maximum_record_age`` the records go to
  ``on_failure`` with Lambda's failure record and are then acknowledged. Partial failures
  resume from the lowest failed item. Queues: failed records are released back to the
  broker after a backoff (only the listed ones with partial failures; a FIFO failure also
  releases the rest of its group in the batch), and after ``max_receive_count`` receives
  go to ``on_failure``.
* **Acknowledgement.** Nothing is acknowledged before its handler succeeded or it reached
  ``on_failure``. Ordered pollers get only the contiguous completed prefix of each shard
  (:class:`~eventrun.dispatch._acks.AckTracker`), unless they set ``acks_each_record`` (a broker
  that acknowledges records one by one): then each record as it completes.
* **Backpressure.** At most ``buffer_records`` records are held (buffered or in flight);
  when full, the loop stops polling. Function concurrency is enforced by the invoker, so a
  saturated function stops intake here.
* **Shutdown.** :meth:`TriggerDispatcher.shutdown` stops polling, lets lanes finish their
  current batch within the grace period, and releases everything unsettled.

Why this module is over 500 lines: lanes, batching, the stream and queue outcome rules and
acknowledgement share one piece of state (what is held, in flight, completed behind a gap)
whose invariants are easiest to keep in one class; the pure parts already live elsewhere
(`_acks`, `_filters`, `_records`, `_outputs`, `_backoff`).
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from eventrun.abc import Clock, OutMessage, Poller, Record
from eventrun.dispatch._acks import AckTracker, Pending
from eventrun.dispatch._backoff import Backoff
from eventrun.dispatch._filters import RecordFilter
from eventrun.dispatch._lanes import KeyedLane, Lane
from eventrun.dispatch._outputs import output_key, pipeline_outputs
from eventrun.dispatch._records import stream_failure_record
from eventrun.dispatch._shared_events import plain_events, restore_events, shared_event
from eventrun.exceptions import SourceError, WorkerError
from eventrun.observe import batch_span, tracing_enabled

__all__ = ["DispatchSettings", "InvokeResultLike", "Publisher", "TriggerDispatcher"]

log = structlog.get_logger("eventrun.dispatch")

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_ENCODER = msgspec.json.Encoder()
_size = attrgetter("record.size")
_DECODER = msgspec.json.Decoder()


class InvokeResultLike(Protocol):
    @property
    def request_id(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def error_type(self) -> str | None: ...


class Invoke(Protocol):
    """Runs the function on a batch event (JSON bytes). With ``share_events`` the
    dispatcher also passes the event object those bytes encode, for an in-process
    handler to take as is (see :mod:`eventrun.dispatch._shared_events`)."""

    def __call__(self, payload: bytes, *, event: Any = ...) -> Awaitable[InvokeResultLike]: ...


class Publisher(Protocol):
    """Where failure records and pipeline outputs go; retries until delivered."""

    async def publish(self, messages: Sequence[OutMessage]) -> None: ...


@dataclass(slots=True, frozen=True)
class DispatchSettings:
    """The trigger's event-source-mapping parameters, in seconds and counts."""

    function: str
    trigger: str
    batch_size: int = 100
    window_s: float = 0.0
    parallelization_factor: int = 1
    bisect: bool = False
    max_retry_attempts: int = -1
    max_record_age_s: float = -1.0
    report_batch_item_failures: bool = False
    filter: RecordFilter | None = None
    max_receive_count: int | None = None
    queue_lanes: int = 4
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    backoff: Backoff = field(default_factory=Backoff)
    poll_backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.2, cap_s=10.0))
    buffer_records: int = 0
    region: str = "us-east-1"
    share_events: bool = False
    """The function runs in this process (``runtime: inline``): hand it the batch event
    object instead of a copy decoded from the bytes (restored from them on failure)."""

    @property
    def buffer_limit(self) -> int:
        if self.buffer_records:
            return self.buffer_records
        # four batches: the poller reads ahead while a lane's batch runs in a worker
        # (with two, a single-stream Redis trigger idled ~20% waiting for its worker)
        return max(self.batch_size * 4, 400) * max(self.parallelization_factor, 1)


@dataclass(slots=True)
class DispatchStats:
    polled: int = 0
    filtered: int = 0
    invocations: int = 0
    invoke_errors: int = 0
    succeeded: int = 0
    acked: int = 0
    released: int = 0
    retries: int = 0
    bisects: int = 0
    failed_to_destination: int = 0
    published: int = 0
    poll_errors: int = 0
    buffered: int = 0
    in_flight: int = 0


class TriggerDispatcher:
    """Runs one poller trigger: poll, filter, lane, batch, invoke, settle."""

    def __init__(
        self,
        poller: Poller,
        settings: DispatchSettings,
        invoke: Invoke,
        *,
        clock: Clock,
        on_failure: Publisher | None = None,
        on_success: Publisher | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._poller = poller
        self._on_batch = on_batch
        self._s = settings
        self._invoke = invoke
        self._clock = clock
        self._on_failure = on_failure
        self._on_success = on_success
        self._ordered = bool(poller.ordered)
        # a broker that acknowledges each record on its own (Redis XACK) need not wait
        # for the contiguous prefix: order on redelivery holds per key either way
        self._ack_each = self._ordered and bool(getattr(poller, "acks_each_record", False))
        # a poller that keeps something of a handler's result (tumbling-window state)
        self._on_result: Callable[[list[Record], bytes], Awaitable[None]] | None = getattr(
            poller, "on_result", None
        )
        self._tracker = AckTracker()
        self._lanes: dict[Any, Lane] = {}
        self._lane_loops = 0
        self._unsettled: set[Pending] = set()
        self._space = anyio.Event()
        self._draining = False
        self._busy = 0
        self._idle = anyio.Event()
        self._done = anyio.Event()
        self._intake = anyio.CancelScope()
        self._to_ack: list[Record] = []
        self._acking = False
        self._ack_wake = anyio.Event()
        self._acks_drained = anyio.Event()
        self._tg: TaskGroup | None = None
        self.stats = DispatchStats()
        self._log = log.bind(function=settings.function, trigger=settings.trigger)

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` finished draining (or until cancelled)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if not self._ordered:
                    shared = self._lanes["shared"] = Lane()
                    for _ in range(max(1, self._s.queue_lanes)):
                        self._start_lane_loop(shared)
                tg.start_soon(self._poll_loop)
                tg.start_soon(self._ack_loop)
                if hasattr(self._poller, "on_revoke"):
                    self._poller.on_revoke = self._revoke
                extend = getattr(self._poller, "extend", None)
                interval = getattr(self._poller, "heartbeat_interval_s", None)
                if extend is not None and interval:
                    tg.start_soon(self._heartbeat, extend, float(interval))
                task_status.started()
                await self._done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                if self._to_ack:
                    records, self._to_ack = self._to_ack, []
                    await self._ack(records)
                await self._release_unsettled()

    async def shutdown(self, grace_s: float) -> None:
        """Stop polling, finish in-flight batches within ``grace_s``, release the rest."""
        self._draining = True
        self._intake.cancel()
        for lane in self._lanes.values():
            lane.notify()
        if self._busy:
            with anyio.move_on_after(grace_s) as scope:
                await self._idle.wait()
            if scope.cancelled_caught:
                self._log.warning("shutdown.grace_exceeded", in_flight=self.stats.in_flight)
        with anyio.move_on_after(max(grace_s, 1.0)):
            while self._to_ack or self._acking:
                self._acks_drained = anyio.Event()
                await self._acks_drained.wait()
        self._done.set()

    def _held(self) -> int:
        """Records held in memory: buffered, in flight, or completed behind a gap."""
        return self._tracker.pending_count() if self._ordered else len(self._unsettled)

    def statistics(self) -> dict[str, float]:
        self.stats.buffered = len(self._unsettled)
        return {k: float(getattr(self.stats, k)) for k in self.stats.__dataclass_fields__}

    # -- intake --------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        failures = 0
        with self._intake:
            while True:
                # room for every lane to fill a whole batch (a lane per shard and key lane;
                # fewer would leave each lane waiting out its window with a part batch)
                limit = max(self._s.buffer_limit, self._s.batch_size * (self._lane_loops + 1))
                free = limit - self._held()
                # under load, wait until a batch's worth is free: polling each few
                # records that complete costs a poll (a fetch per partition) for each
                # (the records held meanwhile run or complete without more polling)
                if free <= 0 or (free < self._s.batch_size and free < limit // 2):
                    self._space = anyio.Event()
                    await self._space.wait()
                    continue
                try:
                    records = await self._poller.poll(free)
                except SourceError as exc:
                    failures += 1
                    self.stats.poll_errors += 1
                    delay = self._s.poll_backoff.delay(failures)
                    self._log.warning(
                        "source.poll_failed", error=str(exc), retry_in_s=round(delay, 3)
                    )
                    await anyio.sleep(delay)
                    continue
                failures = 0
                if records:
                    await self._accept(records)

    async def _accept(self, records: Sequence[Record]) -> None:
        self.stats.polled += len(records)
        now = self._clock.monotonic()
        flt = self._s.filter
        filtered: list[Pending] = []
        touched: set[Lane] = set()
        if self._ordered:
            pendings = self._tracker.register_all(records, now)
        else:
            pendings = [Pending(record, None, now) for record in records]
        self._unsettled.update(pendings)
        # a lane depends on the shard only, and a poll's records come in shard runs: a
        # run goes to its lane in one call
        lane: Lane | None = None
        shard: str | None = None
        run: list[Pending] = []
        for pending in pendings:
            record = pending.record
            if flt is not None and not flt.matches_record(
                record.plain_event(), record.data_key, record.data
            ):
                filtered.append(pending)
                continue
            if lane is None or record.shard != shard:
                if lane is not None and run:
                    lane.put_all(run)
                    run = []
                lane, shard = self._lane_for(record), record.shard
                touched.add(lane)
            run.append(pending)
        if lane is not None and run:
            lane.put_all(run)
        for lane in touched:
            lane.notify()
        if filtered:
            self.stats.filtered += len(filtered)
            await self._complete(filtered)

    def _lane_for(self, record: Record) -> Lane:
        if self._ordered:
            key: Any = (record.shard,)
            lane = self._lanes.get(key)
            if lane is None:
                factor = self._s.parallelization_factor
                lane = self._lanes[key] = KeyedLane() if factor > 1 else Lane()
                for _ in range(max(1, factor)):
                    self._start_lane_loop(lane)
            return lane
        if not record.shard:
            return self._lanes["shared"]
        key = ("fifo", zlib.crc32(record.shard.encode()) % max(1, self._s.queue_lanes))
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane()
            self._start_lane_loop(lane)
        return lane

    def _start_lane_loop(self, lane: Lane) -> None:
        assert self._tg is not None
        self._lane_loops += 1
        self._tg.start_soon(self._lane_loop, lane)

    # -- lanes ---------------------------------------------------------------------

    async def _lane_loop(self, lane: Lane) -> None:
        while True:
            batch = await self._collect(lane)
            if batch is None:
                if self._draining:
                    return
                continue
            self._busy += 1
            self.stats.in_flight += len(batch)
            try:
                if tracing_enabled():
                    records = [p.record for p in batch]
                    with batch_span(self._s.function, self._s.trigger, records):
                        await self._run_batch(batch)
                else:  # no context manager per batch when traces are off (~1 us)
                    await self._run_batch(batch)
            finally:
                lane.finished(batch)
                self._busy -= 1
                self.stats.in_flight -= len(batch)
                if self._draining and not self._busy:
                    self._idle.set()

    async def _wait(self, lane: Lane, deadline: float | None = None) -> None:
        """Wait until the lane is notified, or until monotonic ``deadline``."""
        if lane.wake.is_set():
            lane.wake = anyio.Event()
        wake = lane.wake
        if deadline is None:
            await wake.wait()
            return
        # the deadline sets the lane's event (a spurious wake-up for the lane's other
        # loops, which re-check and wait again): a timer, not a task per wait
        cancel = self._clock.wake_at(deadline, wake)
        try:
            await wake.wait()
        finally:
            cancel()

    async def _collect(self, lane: Lane) -> list[Pending] | None:
        """The next batch of a lane, or None when there is nothing (draining, or another
        loop of a shared lane took it)."""
        size_limit = self._s.batch_size
        if not lane.available():
            if self._draining:
                return None
            await self._wait(lane)
            if not lane.available():
                return None
        if self._s.window_s > 0 and lane.available() < size_limit:
            deadline = lane.first_arrived() + self._s.window_s
            while (
                0 < lane.available() < size_limit
                and not self._draining
                and self._clock.monotonic() < deadline
            ):
                await self._wait(lane, deadline)
        if self._draining or not lane.available():
            return None
        batch = lane.take(size_limit, self._s.max_payload_bytes)
        if lane.available():
            lane.notify()
        return batch

    # -- invocation ----------------------------------------------------------------

    async def _call(
        self, batch: Sequence[Pending], attempt: int = 0
    ) -> tuple[InvokeResultLike, list[int] | None]:
        """Invoke the function with a batch; return the result and the failed indexes
        (None = the whole batch failed, [] = every record succeeded). Logs one
        ``batch.done`` line per batch (``attempt`` = failed attempts before this one)."""
        records = [p.record for p in batch]
        doc = self._poller.batch_event(records)
        shared, places = shared_event(doc, records) if self._s.share_events else (None, None)
        # a plain copy of struct events needs no bytes: nothing to restore from them
        payload = _ENCODER.encode(doc) if shared is None or places is not None else b""
        self.stats.invocations += 1
        if self._on_batch is not None:
            self._on_batch(len(records))
        started = time.perf_counter()
        try:
            if shared is None:
                result: InvokeResultLike = await self._invoke(payload)
            else:
                result = await self._invoke(payload, event=shared)
        except WorkerError as exc:
            self._log.error("invoke.failed", error=str(exc))
            result = _RuntimeFailure(str(exc))
        except BaseException:
            if places is not None:  # cancelled: the records may be released and retried
                restore_events(records, places, payload)
            raise
        failed: list[int] | None = []
        if not result.ok:
            self.stats.invoke_errors += 1
            failed = None
        elif self._s.report_batch_item_failures:
            failed = _failed_indexes(result.payload, records)
        if places is not None and failed != []:
            # the handler had the records' events themselves: what is retried, split or
            # sent to on_failure must be what was sent, whatever the handler did to it
            restore_events(records, places, payload)
        self._log.info(
            "batch.done",
            request_id=result.request_id,
            shard=records[0].shard,
            size=len(records),
            attempt=attempt + 1,
            outcome="ok" if failed == [] else ("error" if failed is None else "partial"),
            failed=len(records) if failed is None else len(failed),
            duration_s=round(time.perf_counter() - started, 6),
        )
        return result, failed

    async def _run_batch(self, batch: list[Pending]) -> None:
        if self._ordered:
            await self._run_stream_batch(batch)
        else:
            await self._run_queue_batch(batch)

    async def _run_stream_batch(self, batch: list[Pending]) -> None:
        work: deque[tuple[list[Pending], int]] = deque([(batch, 0)])
        invoke_count = 0
        while work:
            items, attempts = work.popleft()
            items = await self._expire_old(items, invoke_count)
            if not items:
                continue
            if sum(map(_size, items)) > self._s.max_payload_bytes:
                await self._fail(items, "MaximumPayloadSizeExceeded", invoke_count, None, "")
                continue
            result, failed = await self._call(items, attempts)
            invoke_count += 1
            if failed == []:
                await self._succeed(items, result.payload)
                continue
            if failed:
                first = min(failed)
                if first:
                    await self._succeed(items, result.payload, range(first), failed)
                items = items[first:]
            if self._s.bisect and len(items) > 1:
                self.stats.bisects += 1
                half = len(items) // 2
                work.extendleft([(items[half:], attempts), (items[:half], attempts)])
                continue
            attempts += 1
            limit = self._s.max_retry_attempts
            if limit >= 0 and attempts > limit:
                await self._fail(
                    items,
                    "RetryAttemptsExhausted",
                    invoke_count,
                    result.error_type,
                    result.request_id,
                )
                continue
            if self._draining:
                return  # left unsettled: released, redelivered later
            self.stats.retries += 1
            delay = self._s.backoff.delay(attempts)
            self._log.info(
                "batch.retry", size=len(items), attempt=attempts, retry_in_s=round(delay, 3)
            )
            await self._clock.sleep_until(self._clock.monotonic() + delay)
            work.appendleft((items, attempts))

    async def _expire_old(self, items: list[Pending], invoke_count: int) -> list[Pending]:
        max_age = self._s.max_record_age_s
        if max_age < 0:
            return items
        now = self._clock.time()
        expired = [p for p in items if now - p.record.timestamp > max_age]
        if not expired:
            return items
        await self._fail(expired, "RecordAgeExceeded", invoke_count, None, "")
        return [p for p in items if not p.done]

    async def _run_queue_batch(self, batch: list[Pending]) -> None:
        result, failed = await self._call(batch)
        if failed == []:
            await self._succeed(batch, result.payload)
            return
        failed_set = set(range(len(batch))) if failed is None else set(failed)
        # FIFO: a failed record also fails the rest of its group in this batch.
        broken_groups = {batch[i].record.shard for i in failed_set if batch[i].record.shard}
        for i, pending in enumerate(batch):
            if pending.record.shard in broken_groups and any(
                j in failed_set and batch[j].record.shard == pending.record.shard for j in range(i)
            ):
                failed_set.add(i)
        good = [i for i in range(len(batch)) if i not in failed_set]
        bad = [p for i, p in enumerate(batch) if i in failed_set]
        # ... and its later messages still buffered in the lane (received after it).
        held_back: list[Pending] = []
        for lane in {self._lane_for(p.record) for p in bad if p.record.shard}:
            held_back += lane.remove_shards(broken_groups)
        if good:
            await self._succeed(batch, result.payload, good, failed or ())
        cap = self._s.max_receive_count
        exhausted = [p for p in bad if cap is not None and p.record.attempt >= cap]
        if exhausted:
            await self._fail(
                exhausted,
                "RetryAttemptsExhausted",
                max(p.record.attempt for p in exhausted),
                result.error_type,
                result.request_id,
            )
        retry = [p for p in bad if not p.done]
        if retry:
            delay = self._s.backoff.delay(max(p.record.attempt for p in retry))
            self.stats.retries += len(retry)
            await self._release(retry + held_back, delay)
        elif held_back:
            await self._release(held_back, 0.0)

    async def _heartbeat(
        self, extend: Callable[[Sequence[Record], float], Awaitable[None]], interval: float
    ) -> None:
        """Keep every held record invisible to other consumers (SQS visibility), the
        buffered ones as well as those in a running batch, so a long handler or a deep
        buffer causes no duplicate delivery."""
        while True:
            await anyio.sleep(interval)
            held = [p.record for p in self._unsettled if not p.done]
            if not held:
                continue
            try:
                await extend(held, interval * 3)
            except SourceError as exc:
                self._log.warning("source.extend_failed", error=str(exc), size=len(held))

    async def _revoke(self, shards: frozenset[str]) -> None:
        """The broker moved ``shards`` to another consumer (Kafka rebalance): give back
        what was buffered but not started; batches already running finish and commit
        while the poller waits for them."""
        dropped: list[Pending] = []
        for key, lane in self._lanes.items():
            if isinstance(key, tuple) and key[0] in shards:
                dropped.extend(lane.drain())
        for shard in shards:
            self._tracker.forget_shard(shard)
        if dropped:
            self._log.info("dispatch.revoked", shards=sorted(shards), released=len(dropped))
            await self._release(dropped, 0.0)

    # -- settling ------------------------------------------------------------------

    async def _succeed(
        self,
        batch: list[Pending],
        result_payload: bytes,
        keep: Sequence[int] | None = None,
        failed: Sequence[int] = (),
    ) -> None:
        """Settle the records at ``keep`` (default: all) of an invoked ``batch``.

        Their pipeline outputs (:func:`eventrun.dispatch._outputs.pipeline_outputs`; ``failed`` are
        the indexes the handler reported) are published to ``on_success`` first, retried
        until delivered, so an input is acknowledged only after its outputs are durable.
        """
        indexes = range(len(batch)) if keep is None else keep
        items = batch if keep is None else [batch[i] for i in keep]
        self.stats.succeeded += len(items)
        if self._on_success is not None:
            keys = [output_key(p.record, ordered=self._ordered) for p in batch]
            messages = pipeline_outputs(result_payload, keys, indexes, failed)
            if messages:
                await self._on_success.publish(messages)
                self.stats.published += len(messages)
        if self._on_result is not None and items:
            await self._on_result([p.record for p in items], result_payload)
        await self._complete(items)

    async def _fail(
        self,
        items: list[Pending],
        condition: str,
        invoke_count: int,
        function_error: str | None,
        request_id: str,
    ) -> None:
        records = [p.record for p in items]
        plain_events(records)
        self.stats.failed_to_destination += len(items)
        self._log.warning(
            "batch.failed", condition=condition, size=len(items), invoke_count=invoke_count
        )
        if self._on_failure is not None:
            doc = stream_failure_record(
                request_id=request_id,
                function=self._s.function,
                condition=condition,
                invoke_count=invoke_count,
                # Lambda's X-Amz-Function-Error value, not the exception type.
                function_error="Unhandled" if function_error else None,
                batch_info=self._poller.batch_info(records),
                payload=self._poller.batch_event(records),
                region=self._s.region,
            )
            key = records[0].key or records[0].shard or None
            # The trigger id lets a DLQ redrive publish the outputs to this on_success.
            message = OutMessage(_ENCODER.encode(doc), key, {"trigger": self._s.trigger})
            await self._on_failure.publish([message])
        await self._complete(items)

    async def _complete(self, items: list[Pending]) -> None:
        if self._ordered:
            ready = self._tracker.complete(items)
            if self._ack_each:
                ready = [p.record for p in items]
        else:
            for p in items:
                p.done = True
            ready = [p.record for p in items]
        self._unsettled.difference_update(items)
        self._space.set()
        if ready:
            self._to_ack.extend(ready)
            self._ack_wake.set()

    async def _ack_loop(self) -> None:
        """Acknowledge completed records in the background, in completion order, so a
        lane never waits for a broker round trip (a Kafka commit, an XACK, a delete)
        before its next batch. Records that complete while an ack is in flight go out
        together in the next one."""
        while True:
            if not self._to_ack:
                self._acks_drained.set()
                self._ack_wake = anyio.Event()
                await self._ack_wake.wait()
                continue
            records, self._to_ack = self._to_ack, []
            self._acking = True
            try:
                await self._ack(records)
            except BaseException:
                # cancelled mid-ack (shutdown past its grace): give the records back so
                # the final shielded flush acknowledges them; acks are idempotent
                self._to_ack[:0] = records
                raise
            finally:
                self._acking = False

    async def _ack(self, records: list[Record]) -> None:
        for attempt in range(1, 6):
            try:
                await self._poller.ack(records)
                self.stats.acked += len(records)
                return
            except SourceError as exc:
                self._log.warning("source.ack_failed", error=str(exc), attempt=attempt)
                await anyio.sleep(self._s.poll_backoff.delay(attempt))
        self._log.error("source.ack_abandoned", size=len(records))

    async def _release(self, items: list[Pending], delay_s: float) -> None:
        for p in items:
            self._unsettled.discard(p)
            p.done = not self._ordered
        self._space.set()
        try:
            await self._poller.release([p.record for p in items], delay_s)
            self.stats.released += len(items)
        except SourceError as exc:
            self._log.warning("source.release_failed", error=str(exc), size=len(items))

    async def _release_unsettled(self) -> None:
        left = [p for p in self._unsettled if not p.done]
        self._unsettled.clear()
        if left:
            self._log.info("dispatch.released_unfinished", size=len(left))
            await self._release(left, 0.0)


@dataclass(slots=True, frozen=True)
class _RuntimeFailure:
    """An invocation that could not run at all (the worker pool failed)."""

    message: str
    request_id: str = ""
    ok: bool = False
    error_type: str | None = "Runtime.Unknown"

    @property
    def payload(self) -> bytes:
        doc = {"errorMessage": self.message, "errorType": "Runtime.Unknown"}
        return _ENCODER.encode(doc)


def _id_key(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    return str(value)


def _failed_indexes(payload: bytes, records: Sequence[Record]) -> list[int] | None:
    """Indexes named in ``batchItemFailures``; None when the response is malformed (the
    whole batch failed, as Lambda treats an unknown or empty identifier)."""
    try:
        doc = _DECODER.decode(payload)
    except msgspec.DecodeError:
        return []
    if not isinstance(doc, dict):
        return []
    failures = doc.get("batchItemFailures")
    if not failures:
        return []
    if not isinstance(failures, list):
        return None
    index = {_id_key(r.item_id): i for i, r in enumerate(records)}
    failed: list[int] = []
    for entry in failures:
        if not isinstance(entry, dict):
            return None
        ident = entry.get("itemIdentifier")
        if ident in (None, "") or _id_key(ident) not in index:
            return None
        failed.append(index[_id_key(ident)])
    return sorted(set(failed))
