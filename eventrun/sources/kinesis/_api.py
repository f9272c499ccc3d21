"""The two shard APIs the poller reads: Kinesis Data Streams and DynamoDB Streams.

They differ only in names (``StreamName`` vs ``StreamArn``, ListShards vs DescribeStream)
and record shapes; :class:`ShardApi` hides the names, the record shapes live in
``_events``. Both return botocore's decoded answers; errors propagate untranslated (the
poller sorts them with :func:`eventrun.brokers.kinesis.classify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventrun.abc import JSON, Record
from eventrun.brokers import kinesis as client_util
from eventrun.exceptions import SourceAuthError, SourceError, SourceUnavailable
from eventrun.sources.kinesis._events import (
    ddb_batch_info,
    ddb_records,
    kinesis_batch_info,
    kinesis_records,
)

__all__ = ["DynamoDBStreamsApi", "KinesisApi", "ShardApi", "ShardInfo", "translate"]


@dataclass(slots=True, frozen=True)
class ShardInfo:
    id: str
    parents: tuple[str, ...]
    closed: bool
    """The shard has an ending sequence number: it ends (after a reshard)."""


def _shard_info(raw: dict[str, Any]) -> ShardInfo:
    parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p)
    closed = "EndingSequenceNumber" in raw.get("SequenceNumberRange", {})
    return ShardInfo(str(raw["ShardId"]), parents, closed)


class ShardApi(Protocol):
    kind: str
    arn: str
    region: str

    async def connect(self) -> None: ...
    async def list_shards(self) -> list[ShardInfo]: ...
    async def iterator(self, shard: str, kind: str, **position: Any) -> str: ...
    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]: ...
    def records(self, raw: list[dict[str, Any]], shard: str, token: object) -> list[Record]: ...
    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]: ...


def translate(exc: Exception, what: str) -> Exception:
    """The eventrun exception for a client-library exception (``what`` failed)."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, LookupError | ValueError):
        return SourceError(f"{what}: {exc}")
    kind = client_util.classify(exc)
    detail = client_util.describe(exc)
    if kind == "missing":
        return SourceError(
            f"{what}: it does not exist (create it, or fix the trigger's stream/table "
            f"and the connection's region/endpoint): {detail}"
        )
    if kind == "auth":
        return SourceAuthError(f"{what}: access denied, check credentials: {detail}")
    if kind in ("unavailable", "throttled", "expired"):
        return SourceUnavailable(f"{what}: {detail}")
    if kind is not None:
        return SourceError(f"{what}: {detail}")
    return exc


def _name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class KinesisApi:
    """Kinesis Data Streams (``stream`` is a name or an ARN)."""

    kind = "kinesis"

    def __init__(self, client: Any, stream: str) -> None:
        self.client = client
        self.name = _name_from_arn(stream) if stream.startswith("arn:") else stream
        self.arn = stream if stream.startswith("arn:") else ""
        self.region = ""

    async def connect(self) -> None:
        summary = await self.client.describe_stream_summary(StreamName=self.name)
        self.arn = summary["StreamDescriptionSummary"]["StreamARN"]
        self.region = self.arn.split(":")[3] or str(self.client.meta.region_name)

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamName": self.name}
        while True:
            answer = await self.client.list_shards(**kwargs)
            shards += [_shard_info(s) for s in answer.get("Shards", [])]
            token = answer.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    async def iterator(self, shard: str, kind: str, **position: Any) -> str:
        answer = await self.client.get_shard_iterator(
            StreamName=self.name, ShardId=shard, ShardIteratorType=kind, **position
        )
        return str(answer["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.get_records(
            ShardIterator=iterator, Limit=min(10000, limit)
        )
        return answer

    def records(self, raw: list[dict[str, Any]], shard: str, token: object) -> list[Record]:
        return kinesis_records(raw, shard, self.arn, self.region, token)

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        return kinesis_batch_info(records, self.arn)


class DynamoDBStreamsApi:
    """DynamoDB Streams: a stream ARN, or a table whose latest stream is read."""

    kind = "dynamodb_streams"

    def __init__(self, client: Any, table_client: Any, *, table: str | None, stream: str | None):
        self.client = client
        self.table_client = table_client
        self.table = table
        self.arn = stream or ""
        self.region = ""

    async def connect(self) -> None:
        if not self.arn:
            table = await self.table_client.describe_table(TableName=self.table)
            arn = table["Table"].get("LatestStreamArn")
            if not arn:
                raise LookupError(
                    f"table {self.table!r} has no stream: enable one "
                    "(StreamSpecification, e.g. NEW_AND_OLD_IMAGES)"
                )
            self.arn = str(arn)
        await self.client.describe_stream(StreamArn=self.arn, Limit=1)
        self.region = self.arn.split(":")[3] or str(self.client.meta.region_name)

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamArn": self.arn}
        while True:
            answer = await self.client.describe_stream(**kwargs)
            desc = answer["StreamDescription"]
            shards += [_shard_info(s) for s in desc.get("Shards", [])]
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs = {"StreamArn": self.arn, "ExclusiveStartShardId": last}

    async def iterator(self, shard: str, kind: str, **position: Any) -> str:
        answer = await self.client.get_shard_iterator(
            StreamArn=self.arn, ShardId=shard, ShardIteratorType=kind, **position
        )
        return str(answer["ShardIterator"])

    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.get_records(
            ShardIterator=iterator, Limit=min(1000, limit)
        )
        return answer

    def records(self, raw: list[dict[str, Any]], shard: str, token: object) -> list[Record]:
        return ddb_records(raw, shard, self.arn, self.region, token)

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        return ddb_batch_info(records, self.arn)
