"""Kinesis Data Streams and DynamoDB Streams, read shard by shard with aiobotocore.

Two trigger kinds share one poller (:class:`StreamPoller`: shard leases and checkpoints in
the store, resharding, Lambda's polling pace) over two APIs that differ only in names and
record shapes, so both live in this one package: ``kinesis = "eventrun.sources.kinesis:
create"`` and ``dynamodb_streams = "eventrun.sources.kinesis:create_dynamodb_streams"``
in the ``eventrun.sources`` entry points. Imports only the seam (``eventrun.abc``,
``eventrun.exceptions``) and ``eventrun.brokers.kinesis``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from eventrun.abc import SourceSpec
from eventrun.brokers import kinesis as client_util
from eventrun.exceptions import SourceError
from eventrun.sources.kinesis._api import DynamoDBStreamsApi, KinesisApi, ShardApi
from eventrun.sources.kinesis._poller import SHARD_END, StreamPoller

__all__ = ["SHARD_END", "StreamPoller", "create", "create_dynamodb_streams"]


def _client(spec: SourceSpec, service: Any) -> Any:
    try:
        return client_util.open_client(service, spec.connection, max_pool_connections=50)
    except ValueError as exc:
        raise SourceError(f"{spec.name}: {exc}") from exc


def create(spec: SourceSpec) -> StreamPoller:
    """Entry point ``eventrun.sources: kinesis``."""

    async def open_api(stack: contextlib.AsyncExitStack) -> ShardApi:
        client = await stack.enter_async_context(_client(spec, "kinesis"))
        return KinesisApi(client, str(spec.config.stream))

    return StreamPoller(spec, open_api)


def create_dynamodb_streams(spec: SourceSpec) -> StreamPoller:
    """Entry point ``eventrun.sources: dynamodb_streams``."""
    cfg = spec.config

    async def open_api(stack: contextlib.AsyncExitStack) -> ShardApi:
        streams = await stack.enter_async_context(_client(spec, "dynamodbstreams"))
        tables = await stack.enter_async_context(_client(spec, "dynamodb"))
        return DynamoDBStreamsApi(
            streams, tables, table=getattr(cfg, "table", None), stream=getattr(cfg, "stream", None)
        )

    return StreamPoller(spec, open_api)
