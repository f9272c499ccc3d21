"""aiokafka plumbing shared by the Kafka source and the Kafka sink.

* :func:`client_kwargs` builds the keyword arguments both ``AIOKafkaConsumer`` and
  ``AIOKafkaProducer`` accept from a connection model, duck-typed: ``aiokafka_kwargs(
  base_dir)`` when the model has it (SASL/TLS pass through), else its
  ``bootstrap_servers``.
* :func:`producer_kwargs` drops the consumer-only group settings (``session_timeout_ms``,
  ``heartbeat_interval_ms``) a connection may carry, for ``AIOKafkaProducer``.
* :func:`bootstrap_string` is Lambda's ``bootstrapServers`` (``"host:port,host:port"``).
* :func:`classify` sorts an aiokafka exception into ``"auth"`` (credentials, ACLs: not
  retryable), ``"rejected"`` (the request itself is invalid: too large, bad topic) or
  ``"unavailable"`` (connection trouble, timeouts, anything retryable).
* :func:`reachable` answers whether a started client can talk to any broker right now:
  aiokafka reconnects in the background and its ``getmany`` just returns nothing while
  the cluster is down, so the source asks after an empty poll.
* :func:`probe` makes a round trip on every open connection and closes the ones that do
  not answer in time. aiokafka abandons a request only after ``request_timeout_ms`` (40 s by
  default, the connection's ``request_timeout``; it must exceed a JoinGroup's wait for
  the whole group, so it cannot be short), and a request *we* abandon (a commit cut off
  by our own timeout) leaves its connection open: on a half-open connection (a peer that
  accepted the request and never answers) every later request waits behind it. Closing
  the connection fails what is pending on it at once, and aiokafka dials a new one for
  the retry.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import anyio
from aiokafka import errors as kafka_errors
from aiokafka.client import ConnectionGroup
from aiokafka.conn import CloseReason
from aiokafka.protocol.metadata import MetadataRequest

__all__ = [
    "ErrorClass",
    "bootstrap_string",
    "classify",
    "client_kwargs",
    "probe",
    "producer_kwargs",
    "reachable",
]

_CONSUMER_ONLY = ("session_timeout_ms", "heartbeat_interval_ms")

ErrorClass = Literal["auth", "rejected", "unavailable"]

_AUTH = (
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
)
_REJECTED = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
)


def client_kwargs(connection: Any, config_dir: Path | None = None) -> dict[str, Any]:
    """Client keyword arguments from a connection model (see the module docstring).

    Raises ValueError when the connection names no bootstrap servers.
    """
    kwargs: dict[str, Any] = {}
    make = getattr(connection, "aiokafka_kwargs", None)
    if callable(make):
        kwargs.update(make(config_dir))
    servers = kwargs.get("bootstrap_servers") or getattr(connection, "bootstrap_servers", None)
    if not servers:
        raise ValueError("the Kafka connection has no bootstrap_servers")
    kwargs["bootstrap_servers"] = servers
    password = kwargs.get("sasl_plain_password")
    if password is not None and hasattr(password, "get_secret_value"):
        kwargs["sasl_plain_password"] = password.get_secret_value()
    return kwargs


def producer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A copy of :func:`client_kwargs` ' result without consumer-only settings."""
    return {k: v for k, v in kwargs.items() if k not in _CONSUMER_ONLY}


def bootstrap_string(servers: str | list[str] | tuple[str, ...]) -> str:
    """``"host:port,host:port"`` from a string or a list of them (spaces dropped)."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    return ",".join(item.strip() for item in items if item.strip())


def classify(exc: BaseException) -> ErrorClass:
    """Which of our exception families an aiokafka exception belongs to."""
    if isinstance(exc, _AUTH):
        return "auth"
    if isinstance(exc, _REJECTED):
        return "rejected"
    return "unavailable"


async def reachable(client_owner: Any, timeout_s: float = 1.0) -> bool:
    """True when the started consumer/producer ``client_owner`` reaches some broker.

    Uses aiokafka's client (``_client.ready``): an open connection answers at once, a
    closed one is re-dialled, bounded by ``timeout_s``.
    """
    client = getattr(client_owner, "_client", None)
    if client is None:
        return False
    node = client.get_random_node()
    if node is None:
        return False
    with anyio.move_on_after(timeout_s):
        try:
            return bool(await client.ready(node))
        except (kafka_errors.KafkaError, OSError):
            return False
    return False


async def probe(client_owner: Any, timeout_s: float, *, coordinator: bool = True) -> int:
    """Send a metadata request for no topics (the cheapest round trip) on every open
    connection of the started consumer/producer ``client_owner``, concurrently; close
    each connection that does not answer within ``timeout_s``. ``coordinator=False``
    leaves the group coordinator's connection alone (a JoinGroup may legitimately wait
    there for the whole group). Returns how many connections were closed."""
    client = getattr(client_owner, "_client", None)
    conns: dict[Any, Any] = getattr(client, "_conns", None) or {}
    groups = {ConnectionGroup.DEFAULT}
    if coordinator:
        groups.add(ConnectionGroup.COORDINATION)
    live = [
        conn for (_, group), conn in list(conns.items()) if group in groups and conn.connected()
    ]
    dead: list[Any] = []

    async def one(conn: Any) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await conn.send(MetadataRequest([]))
        except TimeoutError:
            dead.append(conn)
        except (kafka_errors.KafkaError, OSError):
            pass  # broken already: aiokafka closed it and dials anew

    async with anyio.create_task_group() as tg:
        for conn in live:
            tg.start_soon(one, conn)
    for conn in dead:
        conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
    return len(dead)
