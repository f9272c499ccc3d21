"""The ``redis_streams`` trigger: a consumer-group poller over one or more streams.

Each stream is a shard (``Record.shard`` = stream name); with ``key_field`` the value of
that field is ``Record.key`` (lanes for ``parallelization_factor``). The event shape is
documented in :mod:`eventrun.sources.redis_streams._records`.

Delivery contract, per stream, as this consumer sees it:

1. **Own pending entries first.** On start, after a reconnect, and after ``release``, the
   consumer re-reads its own PEL (``XREADGROUP ... 0``, cursor by cursor) before it reads
   anything new (``>``). Entries it still holds (returned by ``poll`` and neither acked
   nor released) are skipped, so nothing is delivered twice by one process; entries whose
   reply was lost in a connection drop, or that survived a restart, come back.
2. **New entries** with one ``XREADGROUP ... COUNT n BLOCK 1000`` for all streams.
3. **Claimed entries.** With ``claim_idle`` set, ``XAUTOCLAIM`` periodically takes over
   entries pending longer than ``claim_idle`` on any consumer (a dead replica). Order: a
   claimed entry was handed to another consumer earlier, so its id is below every entry
   this consumer will read with ``>`` later, and claimed entries come out in id order
   (XAUTOCLAIM scans the PEL by id) *before* any later new entry of that stream. They can
   be lower than entries this consumer already delivered: Redis splits a stream among
   the consumers of a group, so strict stream order across consumers never existed; it
   holds fully with one consumer per group, and per consumer otherwise. Our own in-flight
   entries are never claimed back: they are filtered out, and their idle time is reset
   (``XCLAIM ... JUSTID`` to ourselves every ``claim_idle``/3 during ``poll``/``ack``)
   so another replica does not steal them while a handler runs.

``ack`` queues exactly the given ids and returns (the dispatcher acknowledges each entry
as its batch completes, ``acks_each_record``: an entry acked ahead of an older pending one
is safe, the older one comes back first from the PEL and a key's entries complete in
order); a background task of the poller XACKs
whatever is queued in one round trip (acks that arrive meanwhile go in the next one), so
a lane never waits for Redis before its next batch. If Redis is down, the ids stay
queued and the XACK is retried; ``__aexit__`` flushes what is left. An ack lost in a
crash means a redelivery (at least once), never a loss. ``release`` leaves entries pending:
they are re-read from the PEL by the next ``poll`` (or by a restarted consumer of the
same name, or claimed by another after ``claim_idle``). ``deliveryCount`` and
``Record.attempt`` are Redis' delivery counter (1 for a first delivery).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from anyio.abc import TaskGroup
from redis.exceptions import ResponseError

from eventrun.abc import Record, SourceSpec
from eventrun.brokers.redis import connection_url, make_client, translate_errors
from eventrun.exceptions import SourceUnavailable
from eventrun.sources.redis_streams._reads import ReadState
from eventrun.sources.redis_streams._records import EntryBuilder, batch_info, redacted_location

__all__ = ["RedisStreamsPoller", "create"]

log = structlog.get_logger(__name__)

BLOCK_MS = 1000
STATS_INTERVAL_S = 5.0
_POSITIONS = {"LATEST": "$", "TRIM_HORIZON": "0"}


def create(spec: SourceSpec) -> RedisStreamsPoller:
    """Entry point ``eventrun.sources: redis_streams``."""
    return RedisStreamsPoller(spec)


class RedisStreamsPoller:
    """A :class:`eventrun.abc.Poller` for Redis Streams consumer groups (ordered)."""

    ordered = True
    acks_each_record = True  # XACK takes any entry: no need to wait for a shard prefix

    def __init__(self, spec: SourceSpec) -> None:
        cfg = spec.config
        streams = cfg.streams
        self.streams: list[str] = [streams] if isinstance(streams, str) else list(streams)
        self.group: str = getattr(cfg, "group", None) or f"eventrun-{spec.function}"
        start = str(getattr(cfg, "starting_position", None) or "$")
        self.starting_position = _POSITIONS.get(start.upper(), start)
        self.consumer: str = (
            getattr(cfg, "consumer", None) or f"{socket.gethostname()}-{os.getpid()}"
        )
        claim = getattr(cfg, "claim_idle", 60.0)
        self.claim_idle_s: float | None = float(claim) if claim and claim > 0 else None
        self._url = connection_url(spec.connection)
        self._location = redacted_location(self._url)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        key_field = getattr(cfg, "key_field", None)
        builders = {
            s: EntryBuilder(s, self._location, region or "us-east-1", key_field)
            for s in self.streams
        }
        self._arns = {s: b.arn for s, b in builders.items()}
        self._client: Any = None
        self._reads = ReadState(self.streams, self.group, self.consumer, builders)
        self._groups_ready = False
        self._stats: dict[str, float] = {}
        self._next_stats = 0.0
        self._next_claim = 0.0
        self._next_heartbeat = 0.0
        self._tg: TaskGroup | None = None
        self._acks_wanted: anyio.Event | None = None  # created in __aenter__ (needs a loop)

    async def __aenter__(self) -> Self:
        self._client = make_client(self._url, read_timeout_s=BLOCK_MS / 1000 + 5)
        try:
            await self._ensure_groups()
        except BaseException:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        # The ack flusher lives as long as the ``async with`` block (same task).
        self._acks_wanted = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._flush_loop)
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
                # Not given the block's exception: that propagates as it is, ungrouped.
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self._close()

    async def flush(self) -> None:
        """XACK everything queued now (raises SourceUnavailable if Redis is down; the
        ids stay queued for the flusher task then)."""
        try:
            with translate_errors("XACK", self._location):
                await self._reads.flush_acks(self._client)
        except BaseException:
            self._want_flush()
            raise

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._reads.flush_acks(client)
            except Exception as err:  # deferred acks stay pending: redelivered, not lost
                log.warning("source.ack_deferred", source="redis_streams", error=str(err))
            await client.aclose()

    async def _ensure_groups(self) -> None:
        """Create the group on every stream (MKSTREAM) unless it exists."""
        with translate_errors("XGROUP CREATE", self._location):
            async with self._client.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xgroup_create(stream, self.group, self.starting_position, mkstream=True)
                results = await pipe.execute(raise_on_error=False)
        for stream, result in zip(self.streams, results, strict=True):
            if isinstance(result, ResponseError) and "BUSYGROUP" not in str(result):
                raise SourceUnavailable(
                    f"cannot create group {self.group!r} on stream {stream!r} at "
                    f"{self._location}: {result}"
                ) from result
        self._groups_ready = True

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Up to ``max_records`` entries: own pending ones, then claimed, then new."""
        reads = self._reads
        if reads.overflow:
            return reads.take_overflow(max_records)
        if self._client is None:
            raise RuntimeError("RedisStreamsPoller.poll called outside 'async with'")
        count = max(1, min(max_records, 10_000))
        try:
            with translate_errors("XREADGROUP", self._location):
                if not self._groups_ready:
                    await self._ensure_groups()
                records = await reads.read_pending(self._client, count)
                if not records:
                    records = await self._housekeeping(count)
                if not records:
                    records = await reads.read_new(self._client, count, BLOCK_MS)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise SourceUnavailable(f"redis at {self._location}: {exc}") from exc
            # The server lost the group (restart without persistence): recreate it.
            self._groups_ready = False
            reads.recover_all()
            log.warning("source.group_recreated", source="redis_streams", group=self.group)
            return []
        except BaseException:
            reads.recover_all()
            raise
        return reads.split(records, max_records)

    async def _housekeeping(self, count: int) -> list[Record]:
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL_S
            await self.refresh_statistics()
        if self.claim_idle_s is None:
            return []
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.claim_idle_s / 3
            await self._reads.heartbeat(self._client)
        if now < self._next_claim:
            return []
        idle_ms = int(self.claim_idle_s * 1000)
        records, finished = await self._reads.claim(self._client, idle_ms, count)
        if finished:
            self._next_claim = now + max(0.05, min(self.claim_idle_s / 4, 30.0))
        if records:
            log.info(
                "source.entries_claimed",
                source="redis_streams",
                group=self.group,
                count=len(records),
            )
        return records

    async def ack(self, records: Sequence[Record]) -> None:
        """Queue the XACK of exactly these entries (sent by the flusher task)."""
        self._reads.settle(records, acked=True)
        self._want_flush()

    def _want_flush(self) -> None:
        if self._acks_wanted is not None:
            self._acks_wanted.set()

    async def _flush_loop(self) -> None:
        """XACK queued ids, one round trip at a time; retry while Redis is down."""
        failures = 0
        while True:
            assert self._acks_wanted is not None
            await self._acks_wanted.wait()
            self._acks_wanted = anyio.Event()
            try:
                with translate_errors("XACK", self._location):
                    await self._reads.flush_acks(self._client)
                failures = 0
            except Exception as exc:  # kept queued; retried here, and by __aexit__
                failures += 1
                if failures == 1:
                    log.warning("source.ack_deferred", source="redis_streams", error=str(exc))
                await anyio.sleep(min(0.1 * 2**failures, 5.0))
                self._want_flush()

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Leave the entries pending; the next poll re-reads them from the PEL."""
        self._reads.settle(records, acked=False)

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [record.event for record in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(records, self._arns)

    def statistics(self) -> Mapping[str, float]:
        """Per stream ``pending.S``, ``lag.S``, ``oldest_pending_age_s.S`` and totals
        ``pending``, ``lag``, ``oldest_pending_age_s`` (refreshed every few seconds by
        ``poll``, or by :meth:`refresh_statistics`)."""
        return dict(self._stats)

    async def refresh_statistics(self) -> None:
        """Read XINFO GROUPS (lag) and the XPENDING summary of every stream."""
        stats = await self._reads.statistics(self._client, time.time())
        totals = {"pending": 0.0, "lag": 0.0, "oldest_pending_age_s": 0.0}
        for key, value in stats.items():
            name = key.partition(".")[0]
            if name == "oldest_pending_age_s":
                totals[name] = max(totals[name], value)
            else:
                totals[name] += value
        self._stats = {**stats, **totals}
