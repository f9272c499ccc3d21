"""The ``kafka`` trigger: an ordered (stream-contract) poller over a consumer group.

Contract with the runtime (beyond :class:`eventrun.abc.Poller`):

* Subscribes ``topics`` (or ``topic_pattern``) with group ``group_id`` (default
  ``eventrun-FUNCTION``), auto-commit off. A partition without a committed offset starts
  at ``starting_position`` (LATEST, TRIM_HORIZON, or AT_TIMESTAMP via offsets_for_times)
  and that position is committed at once, so the group "exists" from then on, as in
  Lambda; a partition with a committed offset resumes there.
* ``shard`` is ``topic-partition`` (``orders-0``), ``key`` the record key as text (UTF-8,
  else base64), ``item_id`` ``{"partition": "orders-0", "offset": n}``.
* ``ack(records)`` commits, per partition, the last given offset + 1 (the dispatcher
  passes only the contiguous completed prefix) and returns once that is committed.
  Commits are grouped: acks that arrive while a commit is in flight wait for it, then
  the first of them commits all their positions in one request and the others return
  without one (one commit per round trip, not one per batch). Acks of a partition no
  longer assigned to this poller (or assigned again since the records were polled) are
  skipped. A commit that fails for connection reasons is kept and retried with the
  next ack/poll/close; ``ack`` itself does not raise.
* ``poll`` shares its records fairly between partitions (``_kafka_fetch``): aiokafka
  drains its prefetch one partition at a time, which would let one partition fill the
  runtime's bounded buffer and starve the lanes of the others.
* ``release(records, delay_s)``: nothing is committed; the partition is sought back to
  the first released offset so the records come again if the consumer keeps running.
* Rebalance: when partitions are revoked the poller awaits ``on_revoke(shards)`` if the
  runtime set it (drop the shards' buffered, not-started records and ``release`` them),
  then waits up to ``revoke_timeout_s`` until every record it handed out for those
  partitions is acked or released, commits, and lets them go. ``poll`` returns nothing
  while a rebalance is in progress.
* ``poll`` raises SourceUnavailable when no broker is reachable (aiokafka reconnects by
  itself; the runtime's loop backs off and polls again) and SourceAuthError on ACL or
  SASL failures.
* Half-open connections (a broker, or something in between, that accepted requests and
  never answers): after an empty poll, at most every ``probe_interval_s``, every open
  connection gets a metadata round trip; one silent for ``probe_timeout_s`` is closed,
  which fails the fetch hung on it, and aiokafka dials anew (its own request timeout,
  40 s, would otherwise hold the partition that long). A commit cut off by
  ``commit_timeout_s`` probes the connections the same way: the retry must not queue
  behind the hung commit. Not covered: a connection being opened (its ApiVersions
  handshake, under aiokafka's client-wide connect lock) is not probeable and waits out
  the request timeout: after a silence longer than the session timeout, recovery takes
  up to the connection's ``request_timeout`` (aiokafka's 40 s unless set).
* ``statistics()`` (no I/O): ``offset_lag`` (sum) and ``offset_lag.SHARD`` (high
  watermark minus the acked position), ``iterator_age_s`` (Lambda's IteratorAge: age of
  the last record of the latest ack), ``partitions`` (assigned count).

Why this module is over 400 lines: the consumer's positions, commits and rebalances share
one state (the partitions held and their in-flight records); fetching and the Lambda record
shape are in ``_fetch`` and ``_records``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from eventrun.abc import JSON, Record, SourceSpec
from eventrun.brokers import kafka as client_util
from eventrun.exceptions import ConfigError, SourceAuthError, SourceError, SourceUnavailable
from eventrun.sources.kafka._fetch import fair_fetch
from eventrun.sources.kafka._records import batch_event, batch_info, build_records

__all__ = ["KafkaPoller", "create"]

log = structlog.get_logger("eventrun.sources.kafka")
_token = attrgetter("token")

RevokeHook = Callable[[frozenset[str]], Awaitable[None]]


def create(spec: SourceSpec) -> KafkaPoller:
    """Entry point ``eventrun.sources: kafka``."""
    return KafkaPoller(spec)


@dataclass(slots=True, eq=False)
class _Partition:
    """What this poller knows of one assigned partition (a new one per assignment)."""

    tp: TopicPartition
    shard: str
    next_fetch: int = -1
    """Offset after the last record handed out (or the first one released)."""
    done: int = -1
    """Offset after the last acked record: the committed position."""
    assigned: bool = True

    @property
    def settled(self) -> bool:
        return self.next_fetch < 0 or self.done >= self.next_fetch


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, poller: KafkaPoller) -> None:
        self._poller = poller

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._poller._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._poller._on_assigned(assigned)


class KafkaPoller:
    """Poller for the topics of one ``kafka`` trigger (see the module docstring)."""

    ordered = True
    poll_wait_s = 1.0
    connect_timeout_s = 30.0
    commit_timeout_s = 10.0
    revoke_timeout_s = 5.0
    """How long a revoke waits for in-flight records of the revoked partitions."""
    probe_interval_s = 5.0
    probe_timeout_s = 5.0
    """Half-open connection detection (see the module docstring)."""

    def __init__(self, spec: SourceSpec) -> None:
        config = spec.config
        self.spec = spec
        self.on_revoke: RevokeHook | None = None
        """Set by the runtime: awaited with the revoked shards (``topic-partition``)."""
        self._topics = list(getattr(config, "topics", None) or [])
        self._pattern: str | None = getattr(config, "topic_pattern", None)
        if bool(self._topics) == bool(self._pattern):
            raise ConfigError(f"{spec.name}: set exactly one of topics, topic_pattern")
        self.group_id = getattr(config, "group_id", None) or f"eventrun-{spec.function}"
        position = getattr(config, "starting_position", None) or "LATEST"
        self._position = str(getattr(position, "value", position))
        stamp = getattr(config, "starting_position_timestamp", None)
        # epoch seconds: the config's Timestamp type turns ISO 8601 times into them
        self._timestamp_ms = None if stamp is None else round(float(stamp) * 1000)
        try:
            self._kwargs = client_util.client_kwargs(spec.connection or config, spec.config_dir)
        except ValueError as exc:
            raise ConfigError(f"{spec.name}: {exc}") from None
        self.bootstrap_servers = client_util.bootstrap_string(self._kwargs["bootstrap_servers"])
        self._consumer: AIOKafkaConsumer | None = None
        self._starting: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._pending: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        """Positions this poller committed (group commit: see ``_flush``)."""
        self._commit_lock = anyio.Lock()
        self._progress = anyio.Event()
        self._rebalancing = False
        self._assigned = anyio.Event()
        self._assignments = 0
        self._iterator_age_s = 0.0
        self._batch_size = int(getattr(config, "batch_size", None) or 100)
        self._turn = 0
        self._next_probe = 0.0

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        kwargs = dict(self._kwargs)
        kwargs.setdefault("max_poll_interval_ms", 86_400_000)  # backpressure may pause polls
        kwargs.setdefault("rebalance_timeout_ms", int((self.revoke_timeout_s + 25) * 1000))
        consumer = AIOKafkaConsumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest" if self._position == "LATEST" else "earliest",
            **kwargs,
        )
        if self._pattern:
            consumer.subscribe(pattern=self._pattern, listener=_Listener(self))
        else:
            consumer.subscribe(topics=self._topics, listener=_Listener(self))
        self._starting = consumer
        try:
            with anyio.fail_after(self.connect_timeout_s):
                await consumer.start()
                while not self._assignments or self._rebalancing:  # first join completes
                    await self._assigned.wait()
        except (kafka_errors.KafkaError, TimeoutError, OSError) as exc:
            with anyio.move_on_after(5, shield=True):
                await consumer.stop()
            raise self._error(exc, "connect") from exc
        finally:
            self._starting = None
        self._consumer = consumer
        log.info(
            "kafka.connected",
            trigger=self.spec.name,
            group_id=self.group_id,
            partitions=len(self._parts),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with anyio.move_on_after(self.commit_timeout_s + 5, shield=True):
            await self._flush(consumer)
            await self._stop(consumer)

    async def _stop(self, consumer: AIOKafkaConsumer) -> None:
        """``consumer.stop()``, which leaks a CancelledError when a fetch that failed on a
        broken connection is in its retry pause (aiokafka's fetcher awaits the task it
        cancelled): inside our shielded scope no cancellation is ours unless the task is
        being cancelled, so a leaked one is logged, not raised."""
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("kafka.stop_incomplete", trigger=self.spec.name, error="CancelledError")
        except (kafka_errors.KafkaError, OSError) as exc:
            log.warning("kafka.stop_incomplete", trigger=self.spec.name, error=repr(exc))

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise SourceUnavailable(f"{self.spec.name}: the Kafka consumer is not started")
        return self._consumer

    def _error(self, exc: BaseException, what: str) -> SourceError:
        message = f"{self.spec.name}: Kafka {what} failed ({self.bootstrap_servers}): {exc!r}"
        if client_util.classify(exc) == "auth":
            return SourceAuthError(message + "; check the connection's credentials and ACLs")
        return SourceUnavailable(message)

    # -- polling ---------------------------------------------------------------------

    async def poll(self, max_records: int) -> Sequence[Record]:
        consumer = self._require()
        if self._pending and not self._commit_lock.locked():  # left by an outage
            await self._flush(consumer, self.poll_wait_s)
        if self._rebalancing:
            with anyio.move_on_after(self.poll_wait_s):
                await self._assigned.wait()
            return []
        batches: dict[TopicPartition, list[Any]] = {}
        # getmany waits out a rebalance regardless of its timeout: bound it, with
        # asyncio's timeout (aiokafka is asyncio-only), a third of an anyio scope's cost
        bound = asyncio.timeout(self.poll_wait_s + 1.0)
        try:
            async with bound:
                batches = await self._fetch(consumer, max(1, max_records))
        except TimeoutError:
            if not bound.expired():
                raise
        except (kafka_errors.KafkaError, kafka_errors.ConsumerStoppedError) as exc:
            raise self._error(exc, "poll") from exc
        if not batches:
            if not await client_util.reachable(consumer):
                raise SourceUnavailable(
                    f"{self.spec.name}: no Kafka broker reachable at {self.bootstrap_servers}"
                )
            await self._probe(consumer)
            return []
        out: list[Record] = []
        parts = self._parts
        for tp, messages in batches.items():
            if not messages:
                continue
            part = parts.get(tp)
            if part is None:  # assigned without our listener seeing it (should not happen)
                part = parts[tp] = _Partition(tp, f"{tp.topic}-{tp.partition}")
            if part.done < 0:
                part.done = messages[0].offset
            part.next_fetch = messages[-1].offset + 1
            out.extend(build_records(messages, tp.topic, tp.partition, part.shard, part))
        return out

    async def _probe(self, consumer: AIOKafkaConsumer) -> None:
        """Close connections that stopped answering (at most every probe_interval_s)."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval_s
        closed = await client_util.probe(
            consumer, self.probe_timeout_s, coordinator=not self._rebalancing
        )
        if closed:
            log.warning(
                "kafka.connection_dropped",
                trigger=self.spec.name,
                connections=closed,
                reason=f"no answer within {self.probe_timeout_s:g}s",
            )
            raise SourceUnavailable(
                f"{self.spec.name}: {closed} Kafka connection(s) to {self.bootstrap_servers} "
                f"stopped answering; dialling again"
            )

    async def _fetch(
        self, consumer: AIOKafkaConsumer, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        """Up to ``max_records`` records, shared fairly between partitions (see
        :mod:`eventrun.sources.kafka._fetch`)."""
        outstanding = [
            (part.tp, part.next_fetch - part.done if part.next_fetch >= 0 <= part.done else 0)
            for part in self._parts.values()
            if part.assigned
        ]
        self._turn += 1
        return await fair_fetch(
            consumer,
            outstanding,
            max_records=max_records,
            batch_size=self._batch_size,
            turn=self._turn,
            wait_ms=int(self.poll_wait_s * 1000),
        )

    # -- settling --------------------------------------------------------------------

    async def ack(self, records: Sequence[Record]) -> None:
        if not records:
            return
        # each partition's last record (a later one overwrites an earlier one)
        last: dict[_Partition, Record] = dict(zip(map(_token, records), records, strict=True))
        now = time.time()
        age = 0.0
        want: dict[TopicPartition, int] = {}
        for part, record in last.items():
            if not part.assigned:
                log.debug("kafka.ack_skipped", trigger=self.spec.name, shard=part.shard)
                continue
            # item_id, not the event: an inline handler may have changed its event
            position = record.item_id["offset"] + 1
            if position > part.done:
                part.done = position
                self._pending[part.tp] = position
            want[part.tp] = position
            age = max(age, now - record.timestamp)
        self._iterator_age_s = age
        self._progress.set()
        if self._consumer is not None and want:
            await self._flush(self._consumer, want=want)

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        first: dict[_Partition, int] = {}
        for record in records:
            part: _Partition = record.token  # type: ignore[assignment]
            offset: int = record.item_id["offset"]
            if offset < first.get(part, offset + 1):
                first[part] = offset
        consumer = self._consumer
        for part, offset in first.items():
            if not part.assigned or offset >= part.next_fetch:
                continue
            part.next_fetch = offset
            if consumer is not None:
                try:
                    consumer.seek(part.tp, offset)
                except (kafka_errors.KafkaError, ValueError):
                    log.debug("kafka.seek_skipped", trigger=self.spec.name, shard=part.shard)
        self._progress.set()

    async def _flush(
        self,
        consumer: AIOKafkaConsumer,
        timeout_s: float | None = None,
        want: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Commit what acks left pending; connection failures keep it pending.

        Group commit: callers queue on one lock, and a caller whose ``want`` positions a
        previous holder already committed returns without a request of its own.
        """
        async with self._commit_lock:
            done = self._committed
            if want is not None and all(done.get(tp, -1) >= pos for tp, pos in want.items()):
                return
            pending, self._pending = self._pending, {}
            assigned = consumer.assignment()
            offsets = {tp: pos for tp, pos in pending.items() if tp in assigned}
            if not offsets:
                return
            try:
                with anyio.fail_after(timeout_s or self.commit_timeout_s):
                    await consumer.commit(offsets)
            except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as exc:
                log.warning("kafka.commit_skipped", trigger=self.spec.name, error=repr(exc))
            except (kafka_errors.KafkaError, TimeoutError) as exc:
                for tp, pos in offsets.items():
                    if self._pending.get(tp, -1) < pos:
                        self._pending[tp] = pos
                if isinstance(exc, TimeoutError) and timeout_s is None:
                    # abandoned after the full bound: a connection is half-open (the
                    # coordinator's, or the one a coordinator lookup goes over) and a
                    # retry would queue behind the hung request: close what is silent
                    await client_util.probe(
                        consumer, self.probe_timeout_s, coordinator=not self._rebalancing
                    )
                log.warning("source.commit_failed", trigger=self.spec.name, error=repr(exc))
            else:
                for tp, pos in offsets.items():
                    if done.get(tp, -1) < pos:
                        done[tp] = pos

    # -- rebalancing (called from aiokafka's coordinator task) ------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._rebalancing = True
        woken, self._assigned = self._assigned, anyio.Event()
        woken.set()  # waiters re-check their condition on the new event
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        if not parts:
            return
        shards = frozenset(part.shard for part in parts)
        if self.on_revoke is not None:
            try:
                await self.on_revoke(shards)
            except Exception as exc:
                log.warning("kafka.revoke_hook_failed", trigger=self.spec.name, error=repr(exc))
        with anyio.move_on_after(self.revoke_timeout_s) as scope:
            while True:
                progress = self._progress = anyio.Event()
                if all(part.settled for part in parts):
                    break
                await progress.wait()
        consumer = self._consumer_for_listener()
        if consumer is not None:
            await self._flush(consumer)
        for part in parts:
            part.assigned = False
            self._parts.pop(part.tp, None)
        log.info(
            "kafka.partitions_revoked",
            trigger=self.spec.name,
            shards=sorted(shards),
            drained=not scope.cancelled_caught,
        )

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        fresh = [_Partition(tp, f"{tp.topic}-{tp.partition}") for tp in assigned]
        for part in fresh:
            self._committed.pop(part.tp, None)
            old = self._parts.get(part.tp)
            if old is not None:
                old.assigned = False
            self._parts[part.tp] = part
        consumer = self._consumer_for_listener()
        try:
            if consumer is not None and fresh:
                await self._start_positions(consumer, fresh)
        except kafka_errors.KafkaError as exc:
            log.warning("kafka.start_position_failed", trigger=self.spec.name, error=repr(exc))
        finally:
            self._rebalancing = False
            self._assignments += 1
            self._assigned.set()
        log.info(
            "kafka.partitions_assigned",
            trigger=self.spec.name,
            shards=sorted(part.shard for part in fresh),
        )

    def _consumer_for_listener(self) -> AIOKafkaConsumer | None:
        # The first assignment happens inside consumer.start(), before __aenter__ stores it.
        return self._consumer or self._starting

    async def _start_positions(self, consumer: AIOKafkaConsumer, parts: list[_Partition]) -> None:
        """Read committed offsets; place and commit partitions that have none."""
        new: list[_Partition] = []
        for part in parts:
            committed = await consumer.committed(part.tp)
            if committed is None:
                new.append(part)
            else:
                part.done = committed
        if not new:
            return
        if self._position == "AT_TIMESTAMP" and self._timestamp_ms is not None:
            found = await consumer.offsets_for_times({p.tp: self._timestamp_ms for p in new})
            past_end = [p.tp for p in new if not _found(found.get(p.tp))]
            ends = await consumer.end_offsets(past_end) if past_end else {}
            for part in new:
                # seek() (not seek_to_end) so aiokafka's in-flight default reset can't win.
                hit = found.get(part.tp)
                consumer.seek(part.tp, hit.offset if _found(hit) else ends[part.tp])
        positions = {}
        for part in new:
            part.done = positions[part.tp] = await consumer.position(part.tp)
        await consumer.commit(positions)

    # -- shapes and gauges -----------------------------------------------------------

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        return batch_event(
            records, self.bootstrap_servers, getattr(self.spec.config, "event_source_arn", None)
        )

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        return batch_info(records, self.bootstrap_servers)

    def statistics(self) -> Mapping[str, float]:
        stats: dict[str, float] = {}
        consumer = self._consumer
        total = 0.0
        if consumer is not None:
            for part in list(self._parts.values()):
                high = consumer.highwater(part.tp)
                if high is None or part.done < 0:
                    continue
                lag = float(max(0, high - part.done))
                stats[f"offset_lag.{part.shard}"] = lag
                total += lag
        stats["offset_lag"] = total
        stats["iterator_age_s"] = self._iterator_age_s
        stats["partitions"] = float(len(self._parts))
        return stats


def _found(hit: Any) -> bool:
    """An offsets_for_times answer names a record (Kafka: None past the last record;
    Tansu: timestamp -1)."""
    return hit is not None and hit.timestamp >= 0
