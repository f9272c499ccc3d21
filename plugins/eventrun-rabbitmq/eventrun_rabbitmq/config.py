"""Config models: the ``rabbitmq`` trigger and ``connections.rabbitmq.NAME``.

Registered through the ``eventrun.triggers`` / ``eventrun.connections`` entry points, so
the core validates ``triggers: - rabbitmq: {...}`` with :class:`RabbitMQTrigger` and
``eventrun schema`` documents it. Defaults are Lambda's for Amazon MQ: batch_size 100
(at most 10,000), maximum_batching_window 500 ms, one batch at a time per mapping.
"""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from eventrun.abc import BatchControls, ConnectionModel
from eventrun.exceptions import ConfigError

__all__ = ["RabbitMQConnection", "RabbitMQTrigger", "check_amqp_url", "redact_url", "vhost_of"]

_SCHEMES = ("amqp", "amqps")
_STREAM_ONLY = frozenset(
    {"parallelization_factor", "bisect_batch_on_function_error", "maximum_record_age"}
)


def check_amqp_url(url: str) -> str:
    """``url`` if it is an amqp(s):// URL with a host, else ValueError naming the fix."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(
            "must be an amqp://user:pass@host:port/vhost (or amqps://) URL, "
            f"got {redact_url(url)!r}"
        )
    return url


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()


def vhost_of(url: str) -> str:
    """The virtual host an AMQP URL names: its path without the leading ``/``, unquoted;
    ``/`` (RabbitMQ's default vhost) when the path is empty."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class RabbitMQConnection(ConnectionModel):
    """A RabbitMQ broker (``connections.rabbitmq.NAME``)."""

    url: SecretStr = Field(
        description="amqp://user:pass@host:port/vhost (amqps:// for TLS); %2F is vhost '/'."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        check_amqp_url(value.get_secret_value())
        return value

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact_url(self.url.get_secret_value())


class RabbitMQTrigger(BatchControls):
    """Consume a RabbitMQ queue, like Lambda's Amazon MQ (RabbitMQ) event source mapping.

    Messages are acknowledged only after the handler succeeded (or they went to
    ``on_failure``). A failed message goes back to the queue (``basic.reject`` with
    requeue) after a backoff and is delivered again, until ``maximum_retry_attempts``.
    """

    url: SecretStr | None = Field(
        None, description="amqp://user:pass@host:port/vhost (this or connection)."
    )
    connection: str | None = Field(None, description="connections.rabbitmq name holding the url.")
    queue: str = Field(min_length=1, max_length=255, description="The queue to consume.")
    maximum_concurrency: int = Field(
        1,
        ge=1,
        le=1000,
        description=(
            "Batches run at once. 1 (Lambda's RabbitMQ default) keeps queue order; more run"
            " batches in parallel."
        ),
    )
    prefetch: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="AMQP prefetch count; unset: four batches (the dispatcher's read-ahead).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_amqp_url(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url is None) == (self.connection is None):
            raise ValueError("set exactly one of url or connection")
        stream_only = sorted(_STREAM_ONLY & self.model_fields_set)
        if stream_only:
            raise ValueError(
                f"{', '.join(stream_only)} apply to stream triggers only: a rabbitmq queue"
                " retries each failed message on its own (use maximum_concurrency for"
                " parallel batches, maximum_retry_attempts for retries)"
            )
        return self

    @property
    def max_receive_count(self) -> int | None:
        """Deliveries after which the dispatcher sends a failing message to on_failure."""
        if self.maximum_retry_attempts < 0:
            return None
        return int(self.maximum_retry_attempts) + 1


def url_of(config: Any, connection: Any) -> str:
    """The broker URL of a trigger (its own ``url``) or of its named connection."""
    for holder in (config, connection):
        url = getattr(holder, "url", None) if holder is not None else None
        if url is not None:
            getter = getattr(url, "get_secret_value", None)
            return str(getter() if getter is not None else url)
    raise ConfigError(
        "rabbitmq: no broker URL: set the trigger's url, or name a connection that exists"
        " in connections.rabbitmq (destinations: rabbitmq:CONNECTION/QUEUE)"
    )
