"""aiobotocore plumbing for the AWS stream APIs: Kinesis Data Streams and DynamoDB Streams.

* :func:`open_client` builds a ``kinesis`` or ``dynamodbstreams`` client (plus the
  ``dynamodb`` client used to find a table's stream) from a connection model with
  ``client_kwargs()`` (``connections.kinesis.NAME`` / ``connections.dynamodb.NAME``); with
  no connection the standard AWS environment applies (``AWS_REGION``, the credentials
  chain, ``AWS_ENDPOINT_URL_KINESIS``...). Retries are kept to two attempts: the poller
  owns backoff per shard.
* :func:`classify` sorts an exception into ``"throttled"`` (ProvisionedThroughputExceeded,
  LimitExceeded: back off, keep the position), ``"expired"`` (ExpiredIterator: get a new
  iterator from the last position), ``"trimmed"`` (TrimmedDataAccess: the position is
  gone, restart at TRIM_HORIZON), ``"missing"``, ``"auth"``, ``"rejected"`` and
  ``"unavailable"`` (as for SQS).
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from eventrun.brokers.sqs import _connection_kwargs, describe, error_code
from eventrun.brokers.sqs import classify as _classify_generic

__all__ = ["StreamErrorClass", "classify", "describe", "error_code", "open_client"]

StreamErrorClass = Literal[
    "throttled", "expired", "trimmed", "missing", "auth", "rejected", "unavailable"
]

_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "KMSThrottlingException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
_MISSING = frozenset({"ResourceNotFoundException"})


def open_client(
    service: Literal["kinesis", "dynamodbstreams", "dynamodb"],
    connection: Any,
    *,
    max_pool_connections: int = 10,
) -> AbstractAsyncContextManager[Any]:
    """An ``async with`` client of ``service`` for ``connection`` (None: the AWS
    environment). Creating it does no network I/O; raises ``ValueError`` without a region."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    kwargs = _connection_kwargs(connection)
    if "region_name" not in kwargs:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ValueError(
                "no AWS region: set the connection's region or the AWS_REGION environment variable"
            )
        kwargs["region_name"] = region
    kwargs.setdefault(
        "config",
        AioConfig(
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=max_pool_connections,
        ),
    )
    client: AbstractAsyncContextManager[Any] = get_session().create_client(service, **kwargs)
    return client


def classify(exc: BaseException) -> StreamErrorClass | None:
    """Sort a client-library exception; None when it is not one (let it propagate)."""
    code = error_code(exc)
    if code in _THROTTLED:
        return "throttled"
    if code == "ExpiredIteratorException":
        return "expired"
    if code == "TrimmedDataAccessException":
        return "trimmed"
    if code in _MISSING:
        return "missing"
    return _classify_generic(exc)
