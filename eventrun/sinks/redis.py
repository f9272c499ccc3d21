"""The ``redis:CONNECTION/STREAM`` sink: XADD each message to a stream.

Each message becomes one entry with the fields ``data`` (the payload) and ``key`` (only
when the message has a key), plus its attributes as further fields (except ones named
``data``, ``body`` or ``key``). A ``redis_streams`` trigger on that stream therefore sees
the payload as its ``data`` and, with ``key_field: key``, the same ordering key.

``?maxlen=N`` on the target caps the stream (``XADD ... MAXLEN ~ N``: approximate
trimming, cheap). All messages of one ``send`` go out pipelined in one round trip.
Connection problems raise SinkUnavailable (the caller retries: at-least-once, an entry
may then be added twice); a server error (wrong key type, out of memory) raises
SinkRejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable

__all__ = ["RedisSink", "create"]

_RESERVED = frozenset({"data", "body", "key"})


def create(spec: SinkSpec) -> RedisSink:
    """Entry point ``eventrun.sinks: redis``."""
    return RedisSink(spec)


def _connection_url(connection: Any) -> str:
    url = getattr(connection, "url", None) if connection is not None else None
    if url is None:
        return "redis://localhost:6379/0"
    getter = getattr(url, "get_secret_value", None)
    return str(getter() if getter is not None else url)


class RedisSink:
    """A :class:`eventrun.abc.Sink` writing to one Redis stream."""

    def __init__(self, spec: SinkSpec) -> None:
        parts = urlsplit(spec.target)
        stream = parts.path.rpartition("/")[2]
        if not stream:
            raise ConfigError(
                f"{spec.url}: a redis destination is redis:CONNECTION/STREAM, got no stream"
            )
        self.stream = stream
        self.maxlen: int | None = None
        for name, values in parse_qs(parts.query).items():
            if name != "maxlen" or not values[-1].isdigit() or int(values[-1]) < 1:
                raise ConfigError(
                    f"{spec.url}: the only query option is maxlen=N (N >= 1), "
                    f"got {name}={values[-1]}"
                )
            self.maxlen = int(values[-1])
        self._url = _connection_url(spec.connection)
        self._client: Any = None

    async def __aenter__(self) -> Self:
        self._client = aioredis.Redis.from_url(
            self._url,
            decode_responses=False,
            protocol=2,
            socket_timeout=10.0,
            socket_connect_timeout=3.0,
            retry=Retry(NoBackoff(), 0),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """XADD every message (one pipelined round trip); raise if any was not added."""
        if not messages:
            return
        if self._client is None:
            raise RuntimeError("RedisSink.send called outside 'async with'")
        trim: tuple[Any, ...] = ("MAXLEN", "~", self.maxlen) if self.maxlen else ()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for message in messages:
                    fields: list[Any] = ["data", message.payload]
                    if message.key is not None:
                        fields += ["key", message.key]
                    for name, value in message.attributes.items():
                        if name not in _RESERVED:
                            fields += [name, value]
                    pipe.execute_command("XADD", self.stream, *trim, "*", *fields)
                results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise SinkUnavailable(f"redis stream {self.stream!r} unavailable: {exc}") from exc
        errors = [r for r in results if isinstance(r, ResponseError)]
        if errors:
            raise SinkRejected(
                f"redis refused {len(errors)} of {len(messages)} entries for stream "
                f"{self.stream!r}: {errors[0]}"
            )
