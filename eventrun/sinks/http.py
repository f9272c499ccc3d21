"""The ``http(s)://...`` sink: a webhook that gets each message as a JSON POST.

Each message is one ``POST URL`` with ``Content-Type: application/json``, the payload as
the body and ``X-Eventrun-Key`` when the message has a key, sent in order. Any 2xx is
success. A connection error, a timeout, 408, 429 or a 5xx is retried a few times with a
short backoff inside :meth:`HttpSink.send` (``retry_delays_s``) and then raises
SinkUnavailable, so the caller keeps the messages and sends them again later; any other
status (4xx, a redirect) raises SinkRejected. A retried batch starts over from its first
message, so a webhook may see a message twice (at-least-once).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable

__all__ = ["HttpSink", "create"]

_log = structlog.get_logger("eventrun.sinks.http")
_RETRYABLE_STATUS = frozenset({408, 429})
_USER_AGENT = "eventrun-webhook"


def create(spec: SinkSpec) -> HttpSink:
    """Entry point ``eventrun.sinks: http`` and ``https``."""
    return HttpSink(spec.url)


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 408/429/5xx)."""


class HttpSink:
    """A :class:`eventrun.abc.Sink` POSTing JSON to one URL with a pooled client."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        retry_delays_s: Sequence[float] = (0.1, 0.5, 1.0),
    ) -> None:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        self._where = f"{parts.scheme}://{host}{parts.path}"
        """The URL for messages and logs: no credentials, no query (webhook tokens)."""
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{self._where}: expected an http:// or https:// URL with a host")
        self.url = url
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._delays = tuple(retry_delays_s)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
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
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """POST every message in order; raise SinkUnavailable or SinkRejected (see module)."""
        if self._client is None:
            raise RuntimeError(f"{self._where}: use the sink inside `async with` before send()")
        client = self._client
        for attempt, delay in enumerate((*self._delays, None), start=1):
            try:
                for message in messages:
                    await self._post(client, message)
                return
            except _Retryable as exc:
                if delay is None:
                    raise SinkUnavailable(
                        f"{self._where}: still failing after {attempt} attempts: {exc}"
                    ) from exc
                _log.debug("sink.http_retry", url=self._where, attempt=attempt, error=str(exc))
                await anyio.sleep(delay)

    async def _post(self, client: httpx.AsyncClient, message: OutMessage) -> None:
        headers = {"Content-Type": "application/json"}
        if message.key is not None:
            headers["X-Eventrun-Key"] = message.key
        try:
            response = await client.post(self.url, content=message.payload, headers=headers)
        except httpx.TransportError as exc:  # connect, read, write, pool, protocol errors
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {status}")
        raise SinkRejected(
            f"{self._where}: the webhook answered HTTP {status}: {response.text[:200]}"
        )
