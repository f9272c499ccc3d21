"""Connecting to NATS: the server URL of a trigger or connection, redaction, errors.

nats-py reconnects on its own after a connection is established (forever here, with
jittered waits); publishes and acks made meanwhile wait in its pending buffer and go out
on reconnect. Errors of the client are translated to eventrun's exceptions here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client

from eventrun.exceptions import SourceUnavailable

__all__ = ["connect", "redact", "server_url", "translate"]

log = structlog.get_logger("eventrun_nats")

DEFAULT_URL = "nats://127.0.0.1:4222"
INITIAL_ATTEMPTS = 2


def server_url(config: Any, connection: Any) -> str:
    """The URL from the trigger's ``url`` or from its named connection's ``url``."""
    for holder in (config, connection):
        url = getattr(holder, "url", None) if holder is not None else None
        if url is not None:
            getter = getattr(url, "get_secret_value", None)
            return str(getter() if getter is not None else url)
    return DEFAULT_URL


def redact(url: str) -> str:
    """``url`` without credentials (for logs, errors and the event's source ARN)."""
    out = []
    for server in url.split(","):
        parts = urlsplit(server.strip())
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        out.append(urlunsplit((parts.scheme, host, parts.path, "", "")))
    return ",".join(out)


async def connect(url: str, *, name: str) -> Client:
    """Connect (a few attempts per server, then SourceUnavailable); reconnect forever after."""

    async def _error(exc: Exception) -> None:
        log.warning("nats.client_error", server=redact(url), error=str(exc) or type(exc).__name__)

    async def _disconnected() -> None:
        log.warning("nats.disconnected", server=redact(url))

    async def _reconnected() -> None:
        log.info("nats.reconnected", server=redact(url))

    try:
        nc = await nats.connect(
            servers=[s.strip() for s in url.split(",")],
            name=name,
            connect_timeout=3,
            allow_reconnect=True,
            # nats-py applies this to the first connect as well: a few tries there (a
            # server that is down fails the start), then forever once connected
            max_reconnect_attempts=INITIAL_ATTEMPTS,
            reconnect_time_wait=0.5,
            error_cb=_error,
            disconnected_cb=_disconnected,
            reconnected_cb=_reconnected,
        )
    except Exception as exc:
        raise SourceUnavailable(f"cannot connect to NATS at {redact(url)}: {exc!r}") from exc
    nc.options["max_reconnect_attempts"] = -1
    return nc


@contextlib.contextmanager
def translate(action: str, where: str) -> Iterator[None]:
    """Client errors of a connection problem as SourceUnavailable, naming the action."""
    try:
        yield
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.ConnectionDrainingError,
        nats.errors.StaleConnectionError,
        nats.errors.FlushTimeoutError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.NoRespondersError,
        nats.errors.TimeoutError,
        nats.js.errors.ServiceUnavailableError,
        nats.js.errors.ServerError,
        OSError,
    ) as exc:
        detail = str(exc) or type(exc).__name__
        raise SourceUnavailable(f"NATS {action} at {where} failed: {detail}") from exc
