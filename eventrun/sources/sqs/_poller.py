"""The ``sqs`` trigger: an unordered (queue-contract) poller over SQS with aiobotocore.

Contract with the runtime (beyond :class:`eventrun.abc.Poller`):

* ``poll(max_records)`` issues ``ceil(max_records / 10)`` ReceiveMessage calls at once
  (at most ``maximum_concurrency``, capped at 20, default 8). The first long-polls for
  one second, the others short-poll, so a busy queue is drained in parallel and an idle
  one costs one request per second. Each call is bounded by the connection's
  ``connect_timeout`` and ``read_timeout`` (an endpoint that accepts and never answers
  costs one read timeout per attempt, then the call fails and the next poll dials anew).
  A poll is shielded from cancellation (for at most that bound plus
  ``POLL_GRACE_S``): an abandoned receive would still take messages on the
  server and hide them for their whole visibility timeout, so a shutdown waits for it and
  releases what it returned. FIFO queues make those calls one after another (stopping at
  the first short answer) so each group's messages come back in order; records carry
  ``shard = MessageGroupId``. SQS itself hands out no more of a group while one of its
  messages is in flight, so a failed (released) message blocks only its own group.
* ``ack`` deletes (DeleteMessageBatch, chunks of 10 concurrently); ``release(records,
  delay_s)`` makes them visible after ``delay_s`` (0 on shutdown).
* Visibility heartbeat: while a batch is in flight the runtime calls
  ``extend(records, visibility_timeout_s)`` every ``heartbeat_interval_s`` seconds
  (a third of the visibility timeout: the trigger's ``visibility_timeout`` if set, else
  the queue's VisibilityTimeout read at start).
* ``max_receive_count`` (the trigger's, or None): the runtime sends a record to
  ``on_failure`` once ``record.attempt >= max_receive_count``. Without it the queue's own
  RedrivePolicy (enforced by SQS) moves poison messages to the DLQ.
* ``statistics()`` never does I/O: ``poll`` refreshes queue attributes at most every
  ``STATS_INTERVAL_S`` seconds, concurrently with its receives.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import structlog

from eventrun.abc import JSON, Record, SourceSpec
from eventrun.brokers import sqs as client_util
from eventrun.exceptions import SourceAuthError, SourceError, SourceUnavailable
from eventrun.sources.sqs._batch import BatchCaller
from eventrun.sources.sqs._events import to_record

__all__ = ["DEFAULT_CONCURRENCY", "MAX_RECEIVERS", "STATS_INTERVAL_S", "SqsPoller", "create"]

DEFAULT_CONCURRENCY = 8
"""Concurrent ReceiveMessage calls per poll when the trigger sets no maximum_concurrency."""
MAX_RECEIVERS = 20
"""Upper bound on concurrent ReceiveMessage calls per poll, whatever maximum_concurrency."""
STATS_INTERVAL_S = 5.0
LONG_POLL_S = 1
POLL_GRACE_S = 5.0
"""How long past its calls' own timeouts a (shielded) poll may run before it is cut off."""
MAX_VISIBILITY_S = 43_200

log = structlog.get_logger("eventrun.sources.sqs")


def create(spec: SourceSpec) -> SqsPoller:
    """Entry point ``eventrun.sources: sqs``."""
    return SqsPoller(spec)


def _opt(config: Any, name: str) -> Any:
    return getattr(config, name, None)


class SqsPoller:
    """Poller for one SQS queue (standard or FIFO)."""

    ordered = False

    def __init__(self, spec: SourceSpec) -> None:
        cfg = spec.config
        queue = _opt(cfg, "queue_url") or _opt(cfg, "queue_name")
        if not queue:
            raise SourceError(f"{spec.name}: sqs trigger needs queue_url or queue_name")
        self.spec = spec
        self.queue: str = str(queue)
        self.queue_url = self.queue if client_util.is_queue_url(self.queue) else ""
        self.queue_arn = ""
        self.region = ""
        self.fifo = self.queue.endswith(".fifo")
        concurrency = _opt(cfg, "maximum_concurrency")
        self.max_receivers = max(1, min(MAX_RECEIVERS, int(concurrency or DEFAULT_CONCURRENCY)))
        override = _opt(cfg, "visibility_timeout")
        self._visibility_override = int(override) if override else None
        self.visibility_timeout_s: float = float(override or 30)
        self.heartbeat_interval_s: float = self.visibility_timeout_s / 3
        mrc = _opt(cfg, "max_receive_count")
        self.max_receive_count: int | None = int(mrc) if mrc else None
        self._poll_bound_s = client_util.request_bound_s(spec.connection) + POLL_GRACE_S
        self._client: Any = None
        self._batch: BatchCaller | None = None
        self._stack = contextlib.AsyncExitStack()
        self._stats: dict[str, float] = {}
        self._stats_at = -math.inf

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            ctx = client_util.open_client(
                self.spec.connection,
                queue_hint=self.queue,
                max_pool_connections=2 * self.max_receivers + 20,
            )
        except ValueError as exc:
            raise SourceError(f"{self.spec.name}: {exc}") from exc
        self._client = await self._stack.enter_async_context(ctx)
        try:
            await self._connect()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _connect(self) -> None:
        try:
            self.queue_url = await client_util.resolve_queue_url(self._client, self.queue)
            response = await self._client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["QueueArn", "FifoQueue", "VisibilityTimeout"],
            )
        except Exception as exc:
            raise self._translate(exc, "connect") from exc
        attrs = response.get("Attributes", {})
        self.queue_arn = attrs.get("QueueArn", "")
        self.region = self.queue_arn.split(":")[3] if self.queue_arn.count(":") >= 5 else ""
        self.region = self.region or str(self._client.meta.region_name)
        self.fifo = attrs.get("FifoQueue", "false").lower() == "true"
        if self._visibility_override is None:
            self.visibility_timeout_s = float(attrs.get("VisibilityTimeout", 30))
        self.heartbeat_interval_s = max(1.0, self.visibility_timeout_s / 3)
        self._batch = BatchCaller(self._client, self.queue_url, self._translate)
        log.info(
            "sqs.connected",
            trigger=self.spec.name,
            queue=self.queue_url,
            fifo=self.fifo,
            visibility_timeout_s=self.visibility_timeout_s,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()
        self._client = None

    def _translate(self, exc: BaseException, action: str) -> Exception:
        kind = client_util.classify(exc)
        what = f"{self.spec.name}: SQS {action} on queue {self.queue!r} failed"
        detail = client_util.describe(exc)
        if kind == "missing":
            return SourceError(
                f"{self.spec.name}: SQS queue {self.queue!r} does not exist "
                f"(create it, or fix queue_url/queue_name and the connection's region): {detail}"
            )
        if kind == "auth":
            return SourceAuthError(f"{what}: access denied, check credentials: {detail}")
        if kind == "unavailable":
            return SourceUnavailable(f"{what}: {detail}")
        if kind == "rejected":
            return SourceError(f"{what}: {detail}")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    # -- polling -----------------------------------------------------------------------

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Receive up to ``max_records`` messages, returning within about a second."""
        if self._client is None:
            raise SourceUnavailable(f"{self.spec.name}: poll() outside 'async with'")
        calls = max(1, min(math.ceil(max_records / 10), self.max_receivers))
        sizes = [max(1, min(10, max_records - 10 * i)) for i in range(calls)]
        await anyio.lowlevel.checkpoint_if_cancelled()  # the shield below is not a checkpoint
        messages: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        with anyio.CancelScope(shield=True) as scope:  # see the module docstring
            scope.deadline = anyio.current_time() + self._poll_bound_s
            messages, errors = await self._receive(sizes)
        if scope.cancelled_caught:
            raise SourceUnavailable(
                f"{self.spec.name}: ReceiveMessage on {self.queue!r} took over "
                f"{self._poll_bound_s:.0f}s"
            )
        if errors and not messages:
            raise self._translate(errors[0], "ReceiveMessage") from errors[0]
        if errors:
            log.warning(
                "sqs.receive_failed",
                trigger=self.spec.name,
                error=client_util.describe(errors[0]),
                calls_failed=len(errors),
            )
        records = [
            to_record(m, queue_arn=self.queue_arn, region=self.region, fifo=self.fifo)
            for m in messages
        ]
        oldest = min((r.timestamp for r in records), default=None)
        self._stats["oldest_record_age_s"] = 0.0 if oldest is None else time.time() - oldest
        return records

    async def _receive(self, sizes: list[int]) -> tuple[list[dict[str, Any]], list[BaseException]]:
        """One ReceiveMessage per entry of ``sizes``; the first long-polls."""
        results: list[list[dict[str, Any]]] = [[] for _ in sizes]
        arrived: list[int] = []  # call indexes in completion order
        errors: list[BaseException] = []
        extra = (
            {"VisibilityTimeout": self._visibility_override} if self._visibility_override else {}
        )

        async def receive(i: int) -> None:
            try:
                response = await self._client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=sizes[i],
                    WaitTimeSeconds=LONG_POLL_S if i == 0 else 0,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                    **extra,
                )
            except Exception as exc:
                errors.append(exc)
                return
            results[i] = response.get("Messages", [])
            arrived.append(i)

        async def receive_in_turn() -> None:
            # FIFO: one call at a time, each excluding the groups the previous took, so
            # a group's messages come back in order even from servers (moto) that do not
            # serialise concurrent receives of a group.
            for i in range(len(sizes)):
                await receive(i)
                if errors or len(results[i]) < sizes[i]:
                    return

        async with anyio.create_task_group() as tg:
            if self.fifo:
                tg.start_soon(receive_in_turn)
            else:
                for i in range(len(sizes)):
                    tg.start_soon(receive, i)
            if time.monotonic() - self._stats_at >= STATS_INTERVAL_S:
                tg.start_soon(self._refresh_stats)
        return self._dedupe([results[i] for i in arrived]), errors

    @staticmethod
    def _dedupe(chunks: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Concatenate receive results, keeping one copy of a message two concurrent
        calls both got (SQS at-least-once; moto does it often): the copy received last,
        whose receipt handle is the current one, at the first copy's position."""
        by_id: dict[str, dict[str, Any]] = {}
        for chunk in chunks:
            for message in chunk:
                by_id[message["MessageId"]] = message
        return list(by_id.values())

    async def _refresh_stats(self) -> None:
        self._stats_at = time.monotonic()
        try:
            response = await self._client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        except Exception as exc:
            log.debug("sqs.stats_failed", trigger=self.spec.name, error=client_util.describe(exc))
            return
        attrs = response.get("Attributes", {})
        self._stats["queue_depth"] = float(attrs.get("ApproximateNumberOfMessages", 0))
        self._stats["in_flight"] = float(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        self._stats["delayed"] = float(attrs.get("ApproximateNumberOfMessagesDelayed", 0))

    # -- settling ----------------------------------------------------------------------

    def _caller(self) -> BatchCaller:
        if self._batch is None:
            raise SourceUnavailable(f"{self.spec.name}: used outside 'async with'")
        return self._batch

    async def ack(self, records: Sequence[Record]) -> None:
        """Delete the records' messages (DeleteMessageBatch, chunks of 10 concurrently)."""
        await self._caller().delete(records)

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Make the messages visible again after ``delay_s`` seconds (0: at once)."""
        # Rounded up: a backoff of 0.3 s must not make a failed FIFO message visible at
        # once (SQS counts whole seconds).
        await self._caller().change_visibility(records, _clamp(math.ceil(delay_s)), "release")

    async def extend(self, records: Sequence[Record], visibility_timeout_s: float) -> None:
        """Keep in-flight messages hidden for another ``visibility_timeout_s`` from now."""
        await self._caller().change_visibility(records, _clamp(visibility_timeout_s), "extend")

    # -- shapes and gauges -------------------------------------------------------------

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        """Lambda's SQS event: ``{"Records": [...]}``."""
        return {"Records": [r.event for r in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        """``{"SQSBatchInfo": {...}}``: what identifies a failed SQS batch in the failure
        record (Lambda has no on-failure record for SQS; named like ``KafkaBatchInfo``)."""
        return {
            "SQSBatchInfo": {
                "queueArn": self.queue_arn,
                "messageIds": [r.item_id for r in records],
                "batchSize": len(records),
            }
        }

    def statistics(self) -> Mapping[str, float]:
        """``queue_depth``, ``in_flight``, ``delayed`` (GetQueueAttributes, refreshed by
        poll at most every few seconds) and ``oldest_record_age_s`` (of the last poll)."""
        return dict(self._stats)


def _clamp(seconds: float) -> int:
    return max(0, min(MAX_VISIBILITY_S, int(seconds)))
