"""aiormq connections: connect with a deadline, translate errors, describe brokers.

Every aiormq / socket exception is turned into eventrun's at this boundary: a refused
login is :class:`~eventrun.exceptions.SourceAuthError`, a queue that does not exist is a
:class:`~eventrun.exceptions.SourceError` naming it, anything about the network or a
closed channel is :class:`~eventrun.exceptions.SourceUnavailable` (the runtime backs off
and reconnects). The sink side maps the same to SinkUnavailable / SinkRejected.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any
from urllib.parse import urlsplit

import aiormq
import aiormq.exceptions as amqp_errors
import anyio

from eventrun.exceptions import SourceAuthError, SourceError, SourceUnavailable
from eventrun_rabbitmq.config import redact_url

__all__ = ["CONNECT_TIMEOUT_S", "broker_arn", "connect", "describe", "translate"]

CONNECT_TIMEOUT_S = 10.0

_AUTH = (amqp_errors.ProbableAuthenticationError, amqp_errors.AuthenticationError)
_MISSING = (amqp_errors.ChannelNotFoundEntity,)
_DOWN = (
    OSError,
    ConnectionError,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.ChannelClosed,
    amqp_errors.ConnectionClosed,
    amqp_errors.IncompatibleProtocolError,
    TimeoutError,
)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of an exception."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def translate(exc: BaseException, what: str) -> Exception:
    """The eventrun exception for an aiormq/socket error during ``what``."""
    if isinstance(exc, _AUTH):
        return SourceAuthError(f"{what}: login refused, check the user and password: {exc}")
    if isinstance(exc, _MISSING):
        return SourceError(f"{what}: {exc} (declare the queue, or fix `queue` / the vhost)")
    if isinstance(exc, _DOWN):
        return SourceUnavailable(f"{what}: {describe(exc)}")
    return SourceError(f"{what}: {describe(exc)}")


async def connect(url: str, *, name: str) -> Any:
    """An open aiormq connection; SourceUnavailable / SourceAuthError otherwise."""
    where = f"{name}: connecting to RabbitMQ at {redact_url(url)}"
    try:
        with anyio.fail_after(CONNECT_TIMEOUT_S):
            return await aiormq.connect(url, client_properties={"connection_name": name})
    except Exception as exc:
        raise translate(exc, where) from exc


def broker_arn(url: str) -> str:
    """An ARN-shaped id for a self-hosted broker: host and port, never credentials."""
    parts = urlsplit(url)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return f"arn:aws:mq:{region}:000000000000:broker:{parts.hostname}:{port}"


async def close_quietly(connection: Any) -> None:
    """Close a connection, shielded and time-boxed; errors are ignored (the broker
    returns unacknowledged deliveries of a closed channel to their queue either way)."""
    if connection is None:
        return
    # closed already, or unreachable: nothing to do
    with anyio.CancelScope(shield=True), anyio.move_on_after(5), contextlib.suppress(Exception):
        await connection.close()
