"""The redis-py client the Redis Streams poller uses, and error translation.

The client speaks RESP2 with ``decode_responses=False`` and *raw* replies for the stream
commands (no redis-py reply parsing: that is the hot path, and the shapes stay the same
across redis-py versions). redis-py's own retries are off: a retried XREADGROUP could
hand entries to this consumer whose first reply was lost, so the poller must see every
connection error (it then re-reads its pending entries).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from eventrun.exceptions import SourceAuthError, SourceUnavailable

__all__ = ["RAW_COMMANDS", "connection_url", "make_client", "translate_errors"]

RAW_COMMANDS = (
    "XREADGROUP",
    "XAUTOCLAIM",
    "XCLAIM",
    "XPENDING",
    "XINFO GROUPS",
    "XACK",
)


def connection_url(connection: Any, config: Any = None) -> str:
    """The redis URL of a connection model (``url`` may be a SecretStr)."""
    url = getattr(connection, "url", None) if connection is not None else None
    if url is None and config is not None:
        url = getattr(config, "url", None)
    if url is None:
        return "redis://localhost:6379/0"
    getter = getattr(url, "get_secret_value", None)
    return str(getter() if getter is not None else url)


def make_client(url: str, *, read_timeout_s: float) -> aioredis.Redis:
    """A client with raw stream replies, no automatic retries and bounded timeouts."""
    client = aioredis.Redis.from_url(
        url,
        decode_responses=False,
        protocol=2,
        socket_timeout=read_timeout_s,
        socket_connect_timeout=3.0,
        retry=Retry(NoBackoff(), 0),
    )
    for command in RAW_COMMANDS:
        client.set_response_callback(command, _identity)
    return client


def _identity(response: Any, **_options: Any) -> Any:
    return response


@contextlib.contextmanager
def translate_errors(what: str, location: str) -> Iterator[None]:
    """Turn redis-py exceptions into eventrun's (server errors other than auth pass)."""
    try:
        yield
    except (AuthenticationError, NoPermissionError) as exc:
        raise SourceAuthError(
            f"redis at {location} refused {what}: {exc}; check the connection's credentials"
        ) from exc
    except ResponseError:
        raise
    except (RedisError, OSError) as exc:
        raise SourceUnavailable(f"redis at {location} unavailable during {what}: {exc}") from exc
