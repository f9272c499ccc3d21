"""In-memory sources and sinks that implement the plugin Protocols for real.

:class:`MemoryStream` behaves like a partitioned log (Kafka, Redis Streams): records of a
shard have increasing offsets, a consumer position advances on poll, and only acknowledged
offsets are committed; :meth:`MemoryStream.restart` rewinds to the committed position, as a
consumer restart does. :class:`MemoryQueue` behaves like SQS: a received message is
invisible until acknowledged (deleted) or released (visible again after a delay), and its
receive count grows with every delivery. :class:`MemorySink` records what it was sent and
can be switched off to simulate a destination that is down.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio

from eventrun.abc import OutMessage, Record
from eventrun.exceptions import SinkUnavailable, SourceUnavailable

__all__ = ["MemoryQueue", "MemorySink", "MemoryStream"]


class _Base:
    def __init__(self, clock: Callable[[], float] | None) -> None:
        self._now = clock or time.time
        self.available = True
        self._arrived = anyio.Event()
        self._settled = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every ack or release."""
        while not predicate():
            self._settled = anyio.Event()
            await self._settled.wait()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _check(self) -> None:
        if not self.available:
            raise SourceUnavailable("memory source is switched off")

    async def _idle_wait(self) -> None:
        with anyio.move_on_after(0.05):
            await self._arrived.wait()
        self._arrived = anyio.Event()

    def statistics(self) -> Mapping[str, float]:
        return {}


class MemoryStream(_Base):
    """A partitioned log with consumer-group semantics (the stream flavour)."""

    ordered = True

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(clock)
        self.shards: dict[str, list[tuple[str | None, bytes, float]]] = {}
        self.committed: dict[str, int] = {}
        self._position: dict[str, int] = {}
        self.acked: list[tuple[str, int]] = []
        """Every (shard, offset) passed to ack, in call order."""

    def put(self, shard: str, data: bytes, *, key: str | None = None) -> int:
        """Append a record; return its offset."""
        log = self.shards.setdefault(shard, [])
        log.append((key, data, self._now()))
        self._arrived.set()
        return len(log) - 1

    def restart(self) -> None:
        """Rewind every shard to its committed position (a consumer restart)."""
        self._position = dict(self.committed)

    def lag(self) -> int:
        return sum(len(log) - self.committed.get(s, 0) for s, log in self.shards.items())

    async def poll(self, max_records: int) -> Sequence[Record]:
        self._check()
        out: list[Record] = []
        for shard, log in self.shards.items():
            pos = self._position.get(shard, 0)
            while pos < len(log) and len(out) < max_records:
                key, data, ts = log[pos]
                out.append(self._record(shard, pos, key, data, ts))
                pos += 1
            self._position[shard] = pos
        if not out:
            await self._idle_wait()
        return out

    def _record(self, shard: str, offset: int, key: str | None, data: bytes, ts: float) -> Record:
        event = {
            "eventSource": "eventrun:memory",
            "eventSourceARN": f"memory:stream/{shard}",
            "shard": shard,
            "sequenceNumber": str(offset),
            "partitionKey": key,
            "data": base64.b64encode(data).decode(),
        }
        return Record(
            shard=shard,
            item_id=str(offset),
            event=event,
            data=data,
            data_key="data",
            timestamp=ts,
            key=key,
            token=offset,
        )

    async def ack(self, records: Sequence[Record]) -> None:
        self._check()
        for r in records:
            offset = int(r.token)  # type: ignore[call-overload]
            self.acked.append((r.shard, offset))
            if offset + 1 > self.committed.get(r.shard, 0):
                self.committed[r.shard] = offset + 1
        self._settled.set()

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        self._settled.set()

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.event for r in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "MemoryBatchInfo": {
                "shardId": records[0].shard,
                "startSequenceNumber": records[0].item_id,
                "endSequenceNumber": records[-1].item_id,
                "batchSize": len(records),
            }
        }


@dataclass(slots=True)
class _Message:
    id: str
    body: bytes
    group: str
    sent: float
    visible_at: float = 0.0
    receives: int = 0
    receipt: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


class MemoryQueue(_Base):
    """A queue with visibility timeouts and receive counts (the queue flavour, like SQS)."""

    ordered = False

    def __init__(
        self,
        *,
        fifo: bool = False,
        visibility_timeout_s: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock)
        self.fifo = fifo
        self.visibility_timeout_s = visibility_timeout_s
        self.messages: dict[str, _Message] = {}
        self.deleted: list[str] = []
        self.released: list[tuple[str, float]] = []
        self._ids = itertools.count(1)
        self._receipts = itertools.count(1)

    def send(self, body: bytes, *, group: str = "") -> str:
        mid = f"m-{next(self._ids):06d}"
        self.messages[mid] = _Message(mid, body, group if self.fifo else "", self._now())
        self._arrived.set()
        return mid

    def depth(self) -> int:
        return len(self.messages)

    async def poll(self, max_records: int) -> Sequence[Record]:
        self._check()
        now = self._now()
        out: list[Record] = []
        busy_groups = {m.group for m in self.messages.values() if m.group and m.visible_at > now}
        for m in self.messages.values():
            if len(out) >= max_records:
                break
            if m.visible_at > now or (m.group and m.group in busy_groups):
                if m.group:
                    busy_groups.add(m.group)
                continue
            m.receives += 1
            m.receipt = next(self._receipts)
            m.visible_at = now + self.visibility_timeout_s
            out.append(self._record(m))
        if not out:
            await self._idle_wait()
        return out

    def _record(self, m: _Message) -> Record:
        event = {
            "messageId": m.id,
            "receiptHandle": f"{m.id}#{m.receipt}",
            "body": m.body.decode(errors="replace"),
            "attributes": {
                "ApproximateReceiveCount": str(m.receives),
                "SentTimestamp": str(int(m.sent * 1000)),
                **({"MessageGroupId": m.group} if m.group else {}),
            },
            "messageAttributes": {},
            "eventSource": "eventrun:memory-queue",
        }
        return Record(
            shard=m.group,
            item_id=m.id,
            event=event,
            data=m.body,
            data_key="body",
            timestamp=m.sent,
            token=(m.id, m.receipt),
            attempt=m.receives,
        )

    def _current(self, record: Record) -> _Message | None:
        token: tuple[str, int] = record.token  # type: ignore[assignment]
        mid, receipt = token
        m = self.messages.get(mid)
        return m if m is not None and m.receipt == receipt else None

    async def ack(self, records: Sequence[Record]) -> None:
        self._check()
        for r in records:
            if self._current(r) is not None:
                del self.messages[r.item_id]
                self.deleted.append(r.item_id)
        self._settled.set()

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        now = self._now()
        for r in records:
            m = self._current(r)
            if m is not None:
                m.visible_at = now + delay_s
                self.released.append((m.id, delay_s))
        self._arrived.set()
        self._settled.set()

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.event for r in records]}

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"QueueBatchInfo": {"messageIds": [r.item_id for r in records]}}


class MemorySink:
    """Collects messages; ``down = True`` makes :meth:`send` raise SinkUnavailable."""

    def __init__(self) -> None:
        self.messages: list[OutMessage] = []
        self.down = False
        self.failed_sends = 0
        self._received = anyio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def send(self, messages: Sequence[OutMessage]) -> None:
        if self.down:
            self.failed_sends += 1
            raise SinkUnavailable("memory sink is down")
        self.messages.extend(messages)
        self._received.set()

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Deliver like the runtime's publisher: retry until the sink is back up."""
        while True:
            try:
                await self.send(messages)
                return
            except SinkUnavailable:
                await anyio.sleep(0.01)

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` messages arrived."""
        while len(self.messages) < count:
            self._received = anyio.Event()
            await self._received.wait()
