"""In-memory stand-ins for brokers, shaped like the real sources' Lambda events.

A trigger on SQS, Kafka or Redis Streams gets an in-memory poller (``eventrun.testing``'s
:class:`MemoryQueue` / :class:`MemoryStream`, so the real dispatcher runs batching,
retries, bisection, partial failures and the DLQ) whose records look like the real
source's: ``aws:sqs`` messages, ``SelfManagedKafka`` records grouped by topic-partition,
``eventrun:redis-streams`` records. A trigger of another poller kind (a plugin) gets the
generic memory shapes.

Destinations on brokers (``sqs:``, ``kafka:``, ``redis:``, ``http(s):`` and plugin kinds)
become :class:`BusSink` s: what they are sent is recorded by URL, and delivered to every
in-memory trigger that reads the same connection and queue/topic/stream, so a pipeline of
functions chained by ``on_success`` runs end to end in memory. ``local:``, ``file:`` and
``function:`` destinations stay real (the store, files, the async queue).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from eventrun.abc import OutMessage, Record, SinkSpec, SourceSpec
from eventrun.testing import MemoryQueue, MemoryStream

__all__ = ["Bus", "BusSink", "Message", "fake_source", "topics_of"]

REAL_SINKS = frozenset({"local", "file", "function"})


@dataclass(slots=True)
class Message:
    """One record to feed: a body (str, bytes, or a JSON value) and optional metadata."""

    body: Any
    key: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    """SQS message attributes (String), Kafka headers, Redis entry fields."""
    shard: str | None = None
    """Which stream / topic-partition / FIFO group; default: the trigger's first."""

    def data(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def as_message(item: Any) -> Message:
    return item if isinstance(item, Message) else Message(item)


class SqsQueue(MemoryQueue):
    """A MemoryQueue whose records are Lambda SQS records (``eventSource: aws:sqs``)."""

    def __init__(self, name: str, *, visibility_timeout_s: float, clock: Callable[[], float]):
        super().__init__(
            fifo=name.endswith(".fifo"), visibility_timeout_s=visibility_timeout_s, clock=clock
        )
        self.arn = f"arn:aws:sqs:us-east-1:000000000000:{name}"

    def feed(self, message: Message) -> str:
        mid = self.send(message.data(), group=message.shard or message.key or "default")
        self.messages[mid].attributes = dict(message.attributes)
        return mid

    def settled(self) -> bool:
        return not self.messages

    def _record(self, m: Any) -> Record:
        record = super()._record(m)
        base: dict[str, Any] = record.event  # type: ignore[assignment]
        body = m.body.decode(errors="replace")
        attributes = dict(base["attributes"])
        attributes.setdefault("SenderId", "EVENTRUNTEST")
        attributes["ApproximateFirstReceiveTimestamp"] = attributes["SentTimestamp"]
        event = {
            "messageId": m.id,
            "receiptHandle": base["receiptHandle"],
            "body": body,
            "attributes": attributes,
            "messageAttributes": {
                k: {
                    "stringValue": v,
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "String",
                }
                for k, v in m.attributes.items()
            },
            "md5OfBody": hashlib.md5(m.body, usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.arn,
            "awsRegion": "us-east-1",
        }
        record.event = event
        return record

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return {}


class _Stream(MemoryStream):
    """A MemoryStream that remembers each entry's attributes (headers / fields)."""

    def __init__(self, shards: list[str], *, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.default_shard = shards[0]
        self.extra: dict[tuple[str, int], dict[str, str]] = {}

    def feed(self, message: Message) -> str:
        shard = message.shard or self.default_shard
        offset = self.put(shard, message.data(), key=message.key)
        self.extra[(shard, offset)] = dict(message.attributes)
        return f"{shard}:{offset}"

    def settled(self) -> bool:
        return all(self.committed.get(s, 0) >= len(log) for s, log in self.shards.items())


class KafkaTopics(_Stream):
    """Records shaped like Lambda's self-managed Kafka event; shards are ``topic-0``."""

    def _record(self, shard: str, offset: int, key: str | None, data: bytes, ts: float) -> Record:
        record = super()._record(shard, offset, key, data, ts)
        topic, _, partition = shard.rpartition("-")
        event: dict[str, Any] = {
            "topic": topic,
            "partition": int(partition),
            "offset": offset,
            "timestamp": int(ts * 1000),
            "timestampType": "CREATE_TIME",
        }
        if key is not None:
            event["key"] = base64.b64encode(key.encode()).decode()
        event["value"] = base64.b64encode(data).decode()
        headers = self.extra.get((shard, offset), {})
        event["headers"] = [{k: list(v.encode())} for k, v in headers.items()]
        record.event = event
        record.data_key = "value"
        record.item_id = {"partition": shard, "offset": offset}
        return record

    def batch_event(self, records: Sequence[Record]) -> dict[str, Any]:
        grouped: dict[str, list[Any]] = {}
        for r in records:
            grouped.setdefault(r.shard, []).append(r.event)
        return {"eventSource": "SelfManagedKafka", "bootstrapServers": "memory", "records": grouped}

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        infos: dict[str, dict[str, str]] = {}
        for r in records:
            info = infos.setdefault(r.shard, {"firstRecordOffset": str(r.token)})
            info["lastRecordOffset"] = str(r.token)
        return {
            "KafkaBatchInfo": {
                "batchSize": len(records),
                "bootstrapServers": "memory",
                "recordsInfo": infos,
            }
        }


class RedisStreams(_Stream):
    """Records shaped like the ``redis_streams`` source's (Kinesis-like); shards are streams."""

    def _record(self, shard: str, offset: int, key: str | None, data: bytes, ts: float) -> Record:
        record = super()._record(shard, offset, key, data, ts)
        entry_id = f"{int(ts * 1000)}-{offset}"
        fields = {"data": data.decode(errors="replace"), **self.extra.get((shard, offset), {})}
        if key is not None:
            fields.setdefault("key", key)
        record.event = {
            "eventSource": "eventrun:redis-streams",
            "eventVersion": "1.0",
            "eventID": f"{shard}:{entry_id}",
            "eventName": "eventrun:redis-streams:record",
            "awsRegion": "us-east-1",
            "eventSourceARN": f"arn:eventrun:redis:memory:stream/{shard}",
            "redis": {
                "redisSchemaVersion": "1.0",
                "stream": shard,
                "id": entry_id,
                "sequenceNumber": entry_id,
                "partitionKey": key or "",
                "data": base64.b64encode(data).decode(),
                "approximateArrivalTimestamp": ts,
                "deliveryCount": 1,
                "fields": fields,
            },
        }
        record.item_id = entry_id
        return record


class GenericStream(_Stream):
    """A poller kind this module does not know (a plugin): the generic memory shapes."""


FakeSource = SqsQueue | KafkaTopics | RedisStreams | GenericStream


def topics_of(spec: SourceSpec) -> list[tuple[str, str, str]]:
    """The (sink kind, connection, name) keys a trigger reads, for routing sink sends."""
    c = spec.config
    conn = getattr(c, "connection", None) or "default"
    if spec.kind == "sqs":
        name = c.queue_name or str(c.queue_url).rstrip("/").rpartition("/")[2]
        return [("sqs", conn, name)]
    if spec.kind == "kafka":
        return [("kafka", conn, t) for t in (c.topics or [])]
    if spec.kind == "redis_streams":
        return [("redis", conn, s) for s in c.streams]
    return []


def fake_source(spec: SourceSpec, clock: Callable[[], float]) -> FakeSource:
    keys = topics_of(spec)
    if spec.kind == "sqs":
        vt = getattr(spec.config, "visibility_timeout", None)
        return SqsQueue(keys[0][2], visibility_timeout_s=vt or 30.0, clock=clock)
    if spec.kind == "kafka":
        return KafkaTopics([f"{k[2]}-0" for k in keys] or ["topic-0"], clock=clock)
    if spec.kind == "redis_streams":
        return RedisStreams([k[2] for k in keys], clock=clock)
    return GenericStream(["shard-0"], clock=clock)


class Bus:
    """What in-memory sinks were sent, and the in-memory triggers they deliver to."""

    def __init__(self) -> None:
        self.sent: dict[str, list[OutMessage]] = {}
        self.readers: dict[tuple[str, str, str], list[FakeSource]] = {}

    def subscribe(self, spec: SourceSpec, source: FakeSource) -> None:
        for key in topics_of(spec):
            self.readers.setdefault(key, []).append(source)

    def deliver(self, url: str, messages: Sequence[OutMessage]) -> None:
        self.sent.setdefault(url, []).extend(messages)
        kind, _, target = url.partition(":")
        conn, _, name = target.partition("/")
        for source in self.readers.get((kind, conn, name), []):
            for m in messages:
                shard = f"{name}-0" if kind == "kafka" else name
                if kind == "sqs":
                    shard = m.key or "default"
                attributes = dict(m.attributes)
                source.feed(Message(m.payload, key=m.key, attributes=attributes, shard=shard))


class BusSink:
    """A sink that hands what it is sent to the :class:`Bus`."""

    def __init__(self, spec: SinkSpec, bus: Bus) -> None:
        self._url = spec.url
        self._bus = bus

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
        self._bus.deliver(self._url, messages)
