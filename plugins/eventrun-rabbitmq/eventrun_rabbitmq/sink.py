"""The ``rabbitmq:`` sink: publish with publisher confirms.

Destinations::

    rabbitmq:CONNECTION/QUEUE                   # the default exchange, routing key QUEUE
    rabbitmq:CONNECTION/EXCHANGE/ROUTING_KEY    # a named exchange

``CONNECTION`` is a ``connections.rabbitmq`` name. Each message is published persistent
(``delivery_mode`` 2), ``application/json``, ``mandatory`` (a message no queue takes is
returned, not dropped), with the message key in the ``key`` header and its attributes
as further headers. ``send`` returns only when the broker confirmed every message: a
nack or a lost connection raises SinkUnavailable (the caller retries; a message may then
be published twice: at least once), an unroutable message raises SinkRejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import aiormq.exceptions as amqp_errors
import anyio
from pamqp import commands as spec

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun_rabbitmq import _client
from eventrun_rabbitmq.config import redact_url, url_of

__all__ = ["PUBLISH_TIMEOUT_S", "RabbitMQSink", "create"]

PUBLISH_TIMEOUT_S = 30.0


def create(spec: SinkSpec) -> RabbitMQSink:
    """Entry point ``eventrun.sinks: rabbitmq``."""
    return RabbitMQSink(spec)


def parse_target(url: str, target: str) -> tuple[str, str]:
    """``(exchange, routing_key)`` of a ``CONNECTION/QUEUE`` or
    ``CONNECTION/EXCHANGE/ROUTING_KEY`` target."""
    parts = target.split("/", 2)
    if len(parts) == 2 and parts[1]:
        return "", parts[1]
    if len(parts) == 3 and parts[1]:
        return parts[1], parts[2]
    raise ConfigError(
        f"{url}: a rabbitmq destination is rabbitmq:CONNECTION/QUEUE or "
        "rabbitmq:CONNECTION/EXCHANGE/ROUTING_KEY"
    )


class RabbitMQSink:
    """A :class:`eventrun.abc.Sink` publishing to one exchange and routing key."""

    def __init__(self, spec: SinkSpec) -> None:
        self.exchange, self.routing_key = parse_target(spec.url, spec.target)
        self.url = spec.url
        self._broker = url_of(None, spec.connection)
        self._conn: Any = None
        self._channel: Any = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        await _client.close_quietly(conn)

    async def _open(self) -> Any:
        """The confirming channel, (re)connecting when it is gone."""
        async with self._lock:
            channel = self._channel
            if channel is not None and not channel.is_closed and not self._conn.is_closed:
                return channel
            await _client.close_quietly(self._conn)
            self._conn = self._channel = None
            try:
                self._conn = await _client.connect(self._broker, name=f"eventrun sink {self.url}")
                self._channel = await self._conn.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            except Exception as exc:
                raise SinkUnavailable(f"{self.url}: {exc}") from exc
            return self._channel

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Publish every message and wait for the broker's confirms (or raise)."""
        if not messages:
            return
        channel = await self._open()
        problems: list[BaseException] = []

        async def publish(message: OutMessage) -> None:
            headers: dict[str, Any] = dict(message.attributes)
            if message.key is not None:
                headers["key"] = message.key
            props = spec.Basic.Properties(
                content_type="application/json", delivery_mode=2, headers=headers or None
            )
            try:
                confirm = await channel.basic_publish(
                    message.payload,
                    exchange=self.exchange,
                    routing_key=self.routing_key,
                    properties=props,
                    mandatory=True,
                    timeout=PUBLISH_TIMEOUT_S,
                )
            except Exception as exc:
                problems.append(exc)
                return
            if not isinstance(confirm, spec.Basic.Ack):
                problems.append(RuntimeError(f"broker did not confirm: {confirm!r}"))

        async with anyio.create_task_group() as tg:
            for message in messages:
                tg.start_soon(publish, message)
        if problems:
            raise self._translate(problems[0], len(problems), len(messages))

    def _translate(self, exc: BaseException, failed: int, total: int) -> Exception:
        what = (
            f"{self.url}: {failed} of {total} messages not confirmed by "
            f"{redact_url(self._broker)} (exchange {self.exchange!r}, routing key "
            f"{self.routing_key!r})"
        )
        if isinstance(exc, amqp_errors.PublishError):
            return SinkRejected(f"{what}: no queue is bound to take them (declare and bind one)")
        if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
            return SinkRejected(f"{what}: {exc} (declare the exchange)")
        # a nack, a lost connection, a timeout: worth retrying
        return SinkUnavailable(f"{what}: {_client.describe(exc)}")
