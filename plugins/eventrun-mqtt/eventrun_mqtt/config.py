"""Config models of the ``mqtt`` trigger and of ``connections.mqtt.NAME``.

connections:
  mqtt: {main: {url: "mqtt://user:pass@127.0.0.1:1883"}}
functions:
  telemetry:
    handler: app.telemetry:handler
    triggers:
      - mqtt:
          connection: main            # or url: mqtt://127.0.0.1:1883
          topics: ["sensors/+/temperature", "alerts/#"]
          group: telemetry            # shared subscription ($share/telemetry/...) for replicas
          batch_size: 100
          maximum_retry_attempts: 3
          on_failure: "local:telemetry-failed"
"""

from __future__ import annotations

from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from eventrun.abc import BatchControls, ConnectionModel, Duration

__all__ = ["SCHEMES", "MqttConnection", "MqttTrigger", "check_url"]

SCHEMES = ("mqtt", "mqtts")
NEVER_EXPIRES = 4_294_967_295  # MQTT 5: a session expiry interval of 0xFFFFFFFF never ends


def check_url(value: str) -> str:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://`` (TLS); no path."""
    parts = urlsplit(value)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError("must be mqtt://[user:password@]host[:port] or mqtts://... (TLS)")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"has a bad port: {exc}") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("must not have a path or query: topics go in `topics`")
    return value


Url = Annotated[str, Field(min_length=1)]


class MqttConnection(ConnectionModel):
    """An MQTT broker (Mosquitto or any MQTT 5 broker)."""

    url: Url = Field(description="mqtt://[user:password@]host[:port] (1883), or mqtts:// (8883).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_url(value)


class MqttTrigger(BatchControls):
    """Subscribe to MQTT topics with QoS 1 in a persistent session; PUBACK after success."""

    url: Url | None = Field(None, description="mqtt://[user:password@]host[:port] (or connection).")
    connection: str | None = Field(None, description="connections.mqtt name (or url).")
    topics: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="Topic filters (+ and # wildcards); one shard per topic."
    )
    group: str | None = Field(
        None,
        min_length=1,
        description=(
            "Shared subscription group: subscribe as $share/GROUP/FILTER so replicas split"
            " the messages; unset: every subscriber gets every message."
        ),
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        description=(
            "MQTT client id (the persistent session's name); unset: eventrun-FUNCTION-INDEX,"
            " with -HOSTNAME appended when group is set (one session per replica)."
        ),
    )
    receive_maximum: int = Field(
        1000,
        ge=1,
        le=65535,
        description=(
            "1..65535: most unacknowledged messages the broker sends this consumer at once"
            " (MQTT 5 Receive Maximum): the read-ahead buffer; keep it >= batch_size."
        ),
    )
    session_expiry: Duration = Field(
        7 * 86400.0,
        ge=0,
        le=NEVER_EXPIRES,
        description=(
            "How long the broker keeps the session (subscriptions, unacknowledged and queued"
            f" messages) while this consumer is away; 0..{NEVER_EXPIRES} s (that = never)."
        ),
    )
    puback_order: Literal["receive", "topic"] = Field(
        "receive",
        description=(
            "receive: PUBACKs in the order messages arrived, as MQTT requires (a retrying"
            " message holds back later PUBACKs of every topic); topic: each topic's as soon"
            " as they are done (brokers such as Mosquitto accept that)."
        ),
    )
    keepalive: Duration = Field(
        30.0, ge=5, le=3600, description="MQTT keep-alive interval, 5s..1h."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, value: list[str]) -> list[str]:
        for topic in value:
            check_filter(topic)
        return value

    @model_validator(mode="after")
    def _one_broker(self) -> Self:
        if (self.url is None) == (self.connection is None):
            raise ValueError("needs exactly one of url or connection")
        if self.group is not None and any(t.startswith("$share/") for t in self.topics):
            raise ValueError("use either group or $share/... topics, not both")
        if self.group is not None and any(c in self.group for c in "/+#"):
            raise ValueError("group must not contain /, + or #")
        return self


def check_filter(topic: str) -> None:
    """Reject a topic filter the broker would refuse (MQTT 5 section 4.7)."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic {topic!r}: # must be a whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic {topic!r}: + must be a whole level")
    if topic.startswith("$share/") and (len(levels) < 3 or not levels[1]):
        raise ValueError(f"topic {topic!r}: a shared subscription is $share/GROUP/FILTER")
