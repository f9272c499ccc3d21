"""Per-stream read state of the Redis Streams poller: PEL recovery, new reads, claims, acks.

What this consumer holds is tracked per stream in ``held`` (entry ids read and neither
acked nor released, including records read beyond ``max_records`` and kept in
``overflow``); ``unacked`` holds acks not sent yet and ``acking`` the ones whose XACK is
in flight. A PEL re-read skips all three, so one process never delivers an entry twice
while it still holds it. Commands go out raw
(see :mod:`eventrun.brokers.redis`); replies are RESP2 lists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from eventrun.abc import Record
from eventrun.brokers.redis import execute_packed
from eventrun.sources.redis_streams._records import EntryBuilder

__all__ = ["ReadState"]

_START = b"0-0"


class ReadState:
    """Cursors and held entries of one consumer over its streams (no I/O of its own)."""

    def __init__(
        self, streams: list[str], group: str, consumer: str, builders: dict[str, EntryBuilder]
    ) -> None:
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.builders = builders
        self._by_raw = {s.encode(): builders[s] for s in streams}
        self.held: dict[str, set[bytes]] = {s: set() for s in streams}
        self.unacked: dict[str, dict[bytes, None]] = {s: {} for s in streams}
        self.acking: dict[str, set[bytes]] = {s: set() for s in streams}
        self.recovering: dict[str, bytes] = dict.fromkeys(streams, _START)
        self.claim_cursor: dict[str, bytes] = dict.fromkeys(streams, _START)
        self.overflow: deque[Record] = deque()
        self._new_args = ["GROUP", group, consumer, "COUNT", 0, "BLOCK", 0, "STREAMS"]
        self._new_args += [*streams, *([">"] * len(streams))]

    # --- bookkeeping -------------------------------------------------------------------

    def recover_all(self) -> None:
        """Re-read the whole own PEL before anything new (after errors, release, restart)."""
        self.recovering = dict.fromkeys(self.streams, _START)

    def split(self, records: list[Record], max_records: int) -> list[Record]:
        if len(records) <= max_records:
            return records
        self.overflow.extend(records[max_records:])
        return records[:max_records]

    def take_overflow(self, max_records: int) -> list[Record]:
        take = min(max_records, len(self.overflow))
        return [self.overflow.popleft() for _ in range(take)]

    def settle(self, records: Sequence[Record], *, acked: bool) -> None:
        """Forget held entries; queue their XACK when ``acked``, else re-read the PEL."""
        held, unacked = self.held, self.unacked
        for record in records:
            token: bytes = record.token  # type: ignore[assignment]
            held[record.shard].discard(token)
            if acked:
                unacked[record.shard][token] = None
        if not acked and records:
            for record in records:
                self.recovering[record.shard] = _START

    async def flush_acks(self, client: Any) -> None:
        """XACK every queued id in one round trip.

        The ids move to ``acking`` while the XACK is in flight (so a concurrent flush does
        not send them twice, and PEL re-reads still skip them); on a connection error
        they go back to ``unacked`` and the error propagates. A server error (the key is
        no stream any more) drops them: there is nothing left to acknowledge.
        """
        batch = {s: list(ids) for s, ids in self.unacked.items() if ids}
        if not batch:
            return
        for stream, ids in batch.items():
            self.unacked[stream] = {}
            self.acking[stream].update(ids)
        try:
            if len(batch) == 1:
                [(stream, ids)] = batch.items()
                await execute_packed(client, "XACK", stream, self.group, *ids)
            else:
                async with client.pipeline(transaction=False) as pipe:
                    for stream, ids in batch.items():
                        pipe.execute_command("XACK", stream, self.group, *ids)
                    await pipe.execute(raise_on_error=False)
        except ResponseError:
            pass
        except BaseException:
            for stream, ids in batch.items():
                self.unacked[stream].update(dict.fromkeys(ids))
            raise
        finally:
            for stream, ids in batch.items():
                self.acking[stream].difference_update(ids)

    def ack_backlog(self) -> int:
        """Ids whose XACK is queued or in flight."""
        return sum(map(len, self.unacked.values())) + sum(map(len, self.acking.values()))

    def _skip(self, stream: str) -> set[bytes]:
        unacked, acking = self.unacked[stream], self.acking[stream]
        if not unacked and not acking:
            return self.held[stream]
        return self.held[stream].union(unacked, acking)

    # --- reads -------------------------------------------------------------------------

    async def read_new(self, client: Any, count: int, block_ms: int) -> list[Record]:
        """New entries (``>``) of every stream in one blocking XREADGROUP."""
        args = self._new_args
        args[4] = count
        args[6] = block_ms
        reply = await client.execute_command("XREADGROUP", *args)
        if not reply:
            return []
        records: list[Record] = []
        for raw_stream, entries in reply:
            builder = self._by_raw[raw_stream]
            build = builder.build
            held_add = self.held[builder.stream].add
            for raw_id, pairs in entries:
                held_add(raw_id)
                records.append(build(raw_id, pairs, 1))
        return records

    async def read_pending(self, client: Any, count: int) -> list[Record]:
        """The next own-PEL entries of recovering streams, skipping held ones.

        Loops until it has records or every stream finished its recovery, so new entries
        are only read once no older own entry is left behind.
        """
        while self.recovering:
            streams = list(self.recovering)
            cursors = [self.recovering[s] for s in streams]
            seen = self._settling(streams)
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command(
                    "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                    "STREAMS", *streams, *cursors,
                )  # fmt: skip
                for stream, cursor in zip(streams, cursors, strict=True):
                    start = b"(" + cursor if cursor != _START else b"-"
                    pipe.execute_command(
                        "XPENDING", stream, self.group, start, "+", count, self.consumer
                    )
                reply, *pendings = await pipe.execute()
            entries_of = {raw.decode(): entries for raw, entries in reply or []}
            records = self._pel_records(streams, entries_of, pendings, count, seen)
            if records:
                return records
        return []

    def _pel_records(
        self,
        streams: list[str],
        entries_of: dict[str, list[Any]],
        pendings: list[Any],
        count: int,
        seen: dict[str, set[bytes]],
    ) -> list[Record]:
        records: list[Record] = []
        for stream, pending in zip(streams, pendings, strict=True):
            entries = entries_of.get(stream) or []
            if len(entries) < count:
                del self.recovering[stream]
            else:
                self.recovering[stream] = entries[-1][0]
            counts = {row[0]: int(row[3]) for row in pending}
            records.extend(self._fresh(stream, entries, counts, seen[stream]))
        return records

    def _settling(self, streams: Iterable[str]) -> dict[str, set[bytes]]:
        """A copy of what each stream holds or is acknowledging, taken before a read of
        pending entries: an XACK in flight may complete (and leave ``acking``) before
        that read's reply is filtered, though the reply still lists its entries."""
        return {s: set(self._skip(s)) for s in streams}

    def _fresh(
        self,
        stream: str,
        entries: Iterable[Any],
        counts: dict[bytes, int],
        seen: set[bytes] | None = None,
    ) -> list[Record]:
        """Records for entries not held yet (nor in ``seen``); ids whose entry was deleted
        are acked."""
        skip = self._skip(stream) if seen is None else seen.union(self._skip(stream))
        build = self.builders[stream].build
        held = self.held[stream]
        out: list[Record] = []
        for raw_id, pairs in entries:
            if raw_id in skip:
                continue
            if pairs is None:  # trimmed/deleted while pending: nothing left to process
                self.unacked[stream][raw_id] = None
                continue
            held.add(raw_id)
            out.append(build(raw_id, pairs, counts.get(raw_id, 1)))
        return out

    async def claim(self, client: Any, idle_ms: int, count: int) -> tuple[list[Record], bool]:
        """XAUTOCLAIM entries idle for ``idle_ms`` on any consumer; True when every stream's
        scan reached the end of its PEL."""
        streams = list(self.streams)
        seen = self._settling(streams)
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.execute_command(
                    "XAUTOCLAIM", stream, self.group, self.consumer, idle_ms,
                    self.claim_cursor[stream], "COUNT", count,
                )  # fmt: skip
            replies = await pipe.execute()
        finished = True
        claimed: dict[str, list[Any]] = {}
        for stream, reply in zip(streams, replies, strict=True):
            self.claim_cursor[stream] = reply[0]
            finished = finished and reply[0] == _START
            skip = seen[stream].union(self._skip(stream))
            entries = [e for e in reply[1] if e is not None and e[0] not in skip]
            if entries:
                claimed[stream] = entries
        if not claimed:
            return [], finished
        async with client.pipeline(transaction=False) as pipe:
            for stream, entries in claimed.items():
                limit = len(entries) + len(self.held[stream]) + len(self.unacked[stream])
                limit += len(self.acking[stream])
                pipe.execute_command(
                    "XPENDING", stream, self.group, entries[0][0], entries[-1][0],
                    limit, self.consumer,
                )  # fmt: skip
            pendings = await pipe.execute()
        records: list[Record] = []
        for (stream, entries), pending in zip(claimed.items(), pendings, strict=True):
            counts = {row[0]: int(row[3]) for row in pending}
            records.extend(self._fresh(stream, entries, counts, seen[stream]))
        return records, finished

    async def heartbeat(self, client: Any) -> None:
        """Reset the idle time of held entries so other consumers do not claim them."""
        held = {s: ids for s, ids in self.held.items() if ids}
        if not held:
            return
        async with client.pipeline(transaction=False) as pipe:
            for stream, ids in held.items():
                pipe.execute_command("XCLAIM", stream, self.group, self.consumer, 0, *ids, "JUSTID")
            await pipe.execute(raise_on_error=False)

    async def statistics(self, client: Any, now: float) -> dict[str, float]:
        """``pending.S``, ``lag.S`` and ``oldest_pending_age_s.S`` for every stream."""
        async with client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.execute_command("XINFO GROUPS", stream)
                pipe.execute_command("XPENDING", stream, self.group)
            replies = await pipe.execute(raise_on_error=False)
        stats: dict[str, float] = {}
        group = self.group.encode()
        for i, stream in enumerate(self.streams):
            groups, summary = replies[2 * i], replies[2 * i + 1]
            lag = 0.0
            if isinstance(groups, list):
                for flat in groups:
                    info = dict(zip(flat[::2], flat[1::2], strict=True))
                    if info.get(b"name") == group:
                        lag = float(info.get(b"lag") or 0)
            pending, oldest = 0.0, 0.0
            if isinstance(summary, list) and summary[0]:
                pending = float(summary[0])
                first_ms = int(summary[1].partition(b"-")[0])
                oldest = max(0.0, now - first_ms / 1000)
            stats[f"pending.{stream}"] = pending
            stats[f"lag.{stream}"] = lag
            stats[f"oldest_pending_age_s.{stream}"] = oldest
        return stats
