"""aiobotocore plumbing shared by the SQS source and the SQS sink.

* :func:`open_client` builds an SQS client from a connection model (duck-typed: anything
  with ``client_kwargs() -> dict`` for ``session.create_client("sqs", **kwargs)``; with no
  connection the standard AWS environment applies: ``AWS_REGION``, credentials chain,
  ``AWS_ENDPOINT_URL_SQS``...). Retries are kept short (two attempts) because the
  runtime's poll loop and the sink's caller own backoff. Every request is bounded: the
  connection's ``connect_timeout`` and ``read_timeout`` (default 5 s and 6 s; the read
  timeout must exceed the source's 1 s long poll), so a request to an endpoint that
  accepted it and never answers is abandoned, and retried on a new connection, after
  :func:`request_bound_s` at most.
* :func:`classify` sorts a botocore/aiohttp exception into ``"missing"`` (the queue does
  not exist), ``"auth"`` (credentials/permissions), ``"rejected"`` (the request itself is
  invalid), or ``"unavailable"`` (connection trouble, throttling, server errors). The
  source and the sink turn the class into their own exception types.
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

__all__ = [
    "ErrorClass",
    "classify",
    "describe",
    "error_code",
    "is_queue_url",
    "open_client",
    "request_bound_s",
    "resolve_queue_url",
]

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 6.0
ATTEMPTS = 2

ErrorClass = Literal["missing", "auth", "rejected", "unavailable"]

_MISSING_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "KMS.AccessDeniedException",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "OverLimit",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "KmsThrottled",
    }
)
_REGION_IN_URL = re.compile(r"sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


def is_queue_url(value: str) -> bool:
    """True when ``value`` is a queue URL rather than a queue name."""
    return value.startswith(("http://", "https://"))


def _secret(value: Any) -> Any:
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else value


def _connection_kwargs(connection: Any) -> dict[str, Any]:
    if connection is None:
        return {}
    client_kwargs = getattr(connection, "client_kwargs", None)
    if callable(client_kwargs):
        return {k: _secret(v) for k, v in dict(client_kwargs()).items() if v not in (None, "")}
    # Fallback for a plain object carrying the SPEC §2 keys.
    names = {
        "region": "region_name",
        "endpoint_url": "endpoint_url",
        "access_key_id": "aws_access_key_id",
        "secret_access_key": "aws_secret_access_key",
        "session_token": "aws_session_token",
    }
    out: dict[str, Any] = {}
    for attr, kw in names.items():
        value = _secret(getattr(connection, attr, None))
        if value not in (None, ""):
            out[kw] = value
    return out


def open_client(
    connection: Any, *, queue_hint: str = "", max_pool_connections: int = 10
) -> AbstractAsyncContextManager[Any]:
    """An ``async with`` SQS client for ``connection`` (None: the AWS environment).

    ``queue_hint`` (a queue URL) supplies the region when nothing else does. Creating
    the client does no network I/O. Raises ``ValueError`` when no region can be found.
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    kwargs = _connection_kwargs(connection)
    if "region_name" not in kwargs and not (
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    ):
        match = _REGION_IN_URL.search(queue_hint)
        if match is None:
            raise ValueError(
                "no AWS region: set the connection's region or the AWS_REGION environment variable"
            )
        kwargs["region_name"] = match.group(1)
    if "region_name" not in kwargs:
        kwargs["region_name"] = os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"]
    connect_s, read_s = _timeouts(connection)
    kwargs.setdefault(
        "config",
        AioConfig(
            retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
            connect_timeout=connect_s,
            read_timeout=read_s,
            max_pool_connections=max_pool_connections,
        ),
    )
    client: AbstractAsyncContextManager[Any] = get_session().create_client("sqs", **kwargs)
    return client


def _timeouts(connection: Any) -> tuple[float, float]:
    connect = getattr(connection, "connect_timeout", None) or CONNECT_TIMEOUT_S
    read = getattr(connection, "read_timeout", None) or READ_TIMEOUT_S
    return float(connect), float(read)


def request_bound_s(connection: Any) -> float:
    """The longest one API call of a client from :func:`open_client` can take when the
    endpoint never answers: every attempt connects and waits out its read timeout."""
    connect_s, read_s = _timeouts(connection)
    return ATTEMPTS * (connect_s + read_s)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else ``""``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def classify(exc: BaseException) -> ErrorClass | None:
    """Sort a client-library exception; None when it is not one (let it propagate)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _MISSING_CODES:
            return "missing"
        if code in _AUTH_CODES or status in (401, 403):
            return "auth"
        if code in _UNAVAILABLE_CODES or status >= 500 or status == 429:
            return "unavailable"
        return "rejected"
    if isinstance(exc, NoCredentialsError):
        return "auth"
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return "unavailable"
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        return None
    if isinstance(exc, aiohttp.ClientError):
        return "unavailable"
    return None


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a client-library exception."""
    code = error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"


async def resolve_queue_url(client: Any, queue: str) -> str:
    """``queue`` itself when it is a URL, else the URL GetQueueUrl returns for the name."""
    if is_queue_url(queue):
        return queue
    response = await client.get_queue_url(QueueName=queue)
    return str(response["QueueUrl"])
