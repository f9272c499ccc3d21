"""Config models of the ``nats`` trigger and of ``connections.nats.NAME``.

Registered through the entry points ``eventrun.triggers: nats`` and
``eventrun.connections: nats``; the core validates ``triggers: - nats: {...}`` with
:class:`NatsTrigger` and passes the instance as ``SourceSpec.config``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from eventrun.abc import BatchControls, ConnectionModel, Duration

__all__ = ["NatsConnection", "NatsTrigger", "check_nats_url"]

_SCHEMES = ("nats", "tls")


def check_nats_url(value: str) -> str:
    """A ``nats://host:port`` (or ``tls://``) URL, optionally with user:password@."""
    parts = urlsplit(value)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(
            f"must be a nats://host:port or tls://host:port URL, got scheme {parts.scheme!r}"
        )
    return value


class NatsConnection(ConnectionModel):
    """A NATS server or cluster (`connections.nats.NAME`)."""

    url: SecretStr = Field(
        description="nats://[user:password@]host:port; several servers comma-separated."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        for server in value.get_secret_value().split(","):
            check_nats_url(server.strip())
        return value


class NatsTrigger(BatchControls):
    """Consume a JetStream stream with a durable pull consumer (explicit acks)."""

    url: SecretStr | None = Field(
        None, description="nats://host:port of the server; or name a `connection`."
    )
    connection: str | None = Field(None, description="connections.nats name (instead of url).")
    stream: str = Field(min_length=1, description="The JetStream stream to consume.")
    consumer: str = Field(
        min_length=1,
        description=(
            "Durable consumer name; created (pull, explicit acks) when missing, shared by"
            " replicas of the function."
        ),
    )
    subjects: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description=(
            "Filter subjects of a consumer created here (wildcards allowed); empty: the"
            " whole stream. More than one needs nats-server 2.10."
        ),
    )
    ordering: Literal["subject", "none"] = Field(
        "subject",
        description=(
            "subject: records of a subject are handled in order, a failing batch blocks"
            " its subject and is retried in place (stream contract); none: every message"
            " settles on its own and a failed one is nak'd with a backoff delay (queue"
            " contract, redelivered by JetStream)."
        ),
    )
    subject_lanes: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None,
        description=(
            "With ordering: subject, hash subjects onto this many lanes (order still holds"
            " per subject) instead of one lane per subject: for streams with many subjects."
        ),
    )
    deliver_policy: Literal["all", "new", "last_per_subject"] = Field(
        "all", description="Where a consumer created here starts."
    )
    ack_wait: Annotated[Duration, Field(ge=1, le=86400)] = Field(
        30.0,
        description=(
            "ack_wait of a consumer created here; held messages are kept alive with"
            " in-progress acks every third of it."
        ),
    )
    max_deliver: Annotated[int, Field(ge=1, le=10000)] | None = Field(
        None,
        description=(
            "With ordering: none, deliveries after which a failing message goes to"
            " on_failure (and is then acknowledged); unset: retried forever."
        ),
    )
    max_ack_pending: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        20000, description="max_ack_pending of a consumer created here."
    )
    fetch_max: Annotated[int, Field(ge=1, le=10000)] = Field(
        1000, description="Most messages asked for in one fetch request."
    )

    @model_validator(mode="after")
    def _one_address(self) -> NatsTrigger:
        if (self.url is None) == (self.connection is None):
            raise ValueError("give exactly one of url (nats://host:port) or connection (a name)")
        if self.url is not None:
            for server in self.url.get_secret_value().split(","):
                check_nats_url(server.strip())
        if self.subject_lanes is not None and self.ordering == "none":
            raise ValueError("subject_lanes applies to ordering: subject")
        if self.max_deliver is not None and self.ordering == "subject":
            raise ValueError(
                "max_deliver applies to ordering: none; with ordering: subject use"
                " maximum_retry_attempts"
            )
        return self

    @property
    def max_receive_count(self) -> int | None:
        """What the dispatcher caps deliveries of a queue-contract record with."""
        return self.max_deliver if self.ordering == "none" else None
