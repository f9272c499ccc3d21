"""Config models for broker connections, the HTTP server and the embedded store.

Connections are named (``connections.kafka.main``) and referenced by triggers and
destinations; each model knows how to turn itself into client keyword arguments so
no other module interprets these keys. Nothing here imports a broker client.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from eventrun.common import redact_url

from ._types import NO_VALUE, ConfigModel, Duration, Int, Range, problem

__all__ = [
    "AuthConfig",
    "AwsConnection",
    "ConnectionModel",
    "Connections",
    "DynamoDBConnection",
    "KafkaConnection",
    "KinesisConnection",
    "RedisConnection",
    "ServerConfig",
    "SqsConnection",
    "StoreConfig",
    "is_loopback",
]


def _str_or_list(value: object) -> str | None:
    if isinstance(value, str):
        return "<str>"
    if isinstance(value, list):
        return "<list>"
    return None


StrOrList = Annotated[
    Annotated[str, Tag("<str>")] | Annotated[list[str], Tag("<list>")],
    Discriminator(
        _str_or_list,
        custom_error_type="er_union",
        custom_error_message="must be a string or a list of strings",
    ),
]


def _redact(url: str) -> str:
    return redact_url(url)


class ConnectionModel(ConfigModel):
    """Base of a connection kind's model (``connections.KIND.NAME``): a plugin registers
    its subclass in the ``eventrun.connections`` entry point group. Mark secrets
    ``SecretStr`` so they never reach logs or ``eventrun check --print``."""


class KafkaConnection(ConnectionModel):
    """A Kafka cluster (``connections.kafka.NAME``)."""

    bootstrap_servers: StrOrList = Field(
        description='"host:port", a comma-separated string, or a list of them.'
    )
    client_id: str = Field("eventrun", description="Client id reported to the brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | (
        None
    ) = Field(None, description="SASL mechanism; needs security_protocol SASL_*.")
    sasl_plain_username: str | None = Field(None, description="SASL username (PLAIN, SCRAM).")
    sasl_plain_password: SecretStr | None = Field(
        None, description="SASL password (PLAIN, SCRAM); use ${VAR} interpolation."
    )
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM), relative to the config.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM).")
    ssl_keyfile: str | None = Field(None, description="Client private key (PEM).")
    session_timeout: Annotated[Duration, Range(1, 300, duration=True)] | None = Field(
        None, description="Consumer group session timeout; unset: aiokafka's 10s."
    )
    heartbeat_interval: Annotated[Duration, Range(0.1, 60, duration=True)] | None = Field(
        None, description="Consumer heartbeat interval (< session_timeout); unset: 3s."
    )
    request_timeout: Annotated[Duration, Range(5, 300, duration=True)] | None = Field(
        None,
        description=(
            "How long a request may go unanswered before its connection is dropped and "
            "the request retried; unset: aiokafka's 40s. It also bounds a new "
            "connection's handshake, which is what a consumer waits for after a broker "
            "stopped answering for longer than the session timeout. A JoinGroup is one "
            "request that waits for the whole group to rejoin (up to 30s): keep this "
            "above the time your group takes to rebalance."
        ),
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_present(cls, value: str | list[str]) -> str | list[str]:
        items = value.split(",") if isinstance(value, str) else value
        if not items or not all(item.strip() for item in items):
            raise problem('must list brokers as "host:port"')
        return value

    @model_validator(mode="after")
    def _sasl_consistent(self) -> KafkaConnection:
        sasl = self.security_protocol.startswith("SASL_")
        if self.sasl_mechanism and not sasl:
            raise problem(
                "needs security_protocol SASL_PLAINTEXT or SASL_SSL",
                at="sasl_mechanism",
                got=self.sasl_mechanism,
            )
        needs_user = (self.sasl_mechanism or "PLAIN") in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if sasl and needs_user and not self.sasl_plain_username:
            raise problem(
                f"required with security_protocol {self.security_protocol}",
                at="sasl_plain_username",
                got=NO_VALUE,
            )
        return self

    def ssl_context(self, base_dir: Path | None = None) -> ssl.SSLContext:
        """A client SSL context from the ``ssl_*`` files (paths relative to ``base_dir``)."""

        def path(name: str | None) -> str | None:
            return None if name is None else str((base_dir or Path.cwd()) / name)

        ctx = ssl.create_default_context(cafile=path(self.ssl_cafile))
        certfile = path(self.ssl_certfile)
        if certfile:
            ctx.load_cert_chain(certfile, path(self.ssl_keyfile))
        return ctx

    def aiokafka_kwargs(self, base_dir: Path | None = None) -> dict[str, object]:
        """Keyword arguments for ``AIOKafkaConsumer``/``AIOKafkaProducer``.

        SSL protocols get an ``ssl_context`` built from the ``ssl_*`` files, resolved
        against ``base_dir`` (the config directory; default: the working directory).
        """
        kw: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            kw["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            if self.sasl_plain_username is not None:
                kw["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                kw["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = self.ssl_context(base_dir)
        if self.session_timeout is not None:  # consumer-only: the sink drops these two
            kw["session_timeout_ms"] = round(self.session_timeout * 1000)
        if self.heartbeat_interval is not None:
            kw["heartbeat_interval_ms"] = round(self.heartbeat_interval * 1000)
        if self.request_timeout is not None:
            kw["request_timeout_ms"] = round(self.request_timeout * 1000)
        return kw


class RedisConnection(ConnectionModel):
    """A Redis server (``connections.redis.NAME``)."""

    url: SecretStr = Field(
        description="redis://[:password@]host:port/db, rediss://... (TLS) or unix:///path."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise problem("must be a redis://, rediss:// or unix:// URL")
        return value

    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***`` (safe to log)."""
        return _redact(self.url.get_secret_value())


def _default_region(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or "us-east-1"


class AwsConnection(ConnectionModel):
    """An AWS endpoint and credentials: the one shape of ``connections.sqs``,
    ``connections.kinesis`` and ``connections.dynamodb``.

    Unset credentials fall back to the standard AWS chain (environment, profile, role);
    an unset ``endpoint_url`` to botocore's (``AWS_ENDPOINT_URL_<SERVICE>``,
    ``AWS_ENDPOINT_URL``, then AWS).
    """

    region: str = Field(
        "",
        validate_default=True,
        description="AWS region; default $AWS_DEFAULT_REGION, then $AWS_REGION, then us-east-1.",
    )
    endpoint_url: str | None = Field(
        None, description='Endpoint override (LocalStack, moto, ElasticMQ); "" means AWS.'
    )
    aws_access_key_id: str | None = Field(None, description="Access key id.")
    aws_secret_access_key: SecretStr | None = Field(None, description="Secret access key.")
    aws_session_token: SecretStr | None = Field(None, description="Session token.")

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object, info: ValidationInfo) -> object:
        if value is None or value == "":
            context = info.context if isinstance(info.context, Mapping) else {}
            return _default_region(context.get("environ", os.environ))
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise problem("must be an http:// or https:// URL, or empty")
        return value

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for aiobotocore's ``session.create_client(SERVICE, **kw)``."""
        kw = {"region_name": self.region}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.aws_access_key_id:
            kw["aws_access_key_id"] = self.aws_access_key_id
        if self.aws_secret_access_key:
            kw["aws_secret_access_key"] = self.aws_secret_access_key.get_secret_value()
        if self.aws_session_token:
            kw["aws_session_token"] = self.aws_session_token.get_secret_value()
        return kw


class SqsConnection(AwsConnection):
    """An SQS endpoint and credentials (``connections.sqs.NAME``).

    Unset credentials fall back to the standard AWS chain (environment, profile, role).
    """

    connect_timeout: Annotated[Duration, Range(0.5, 120, duration=True)] = Field(
        5.0, description="How long to wait for a TCP (and TLS) connection to the endpoint."
    )
    read_timeout: Annotated[Duration, Range(2, 900, duration=True)] = Field(
        6.0,
        description=(
            "How long a request may wait for the next bytes of its answer before it is "
            "abandoned and retried on a new connection. It must exceed the source's 1 s "
            "long poll (ReceiveMessage WaitTimeSeconds); a larger one only delays "
            "recovery from an endpoint that stopped answering."
        ),
    )


class KinesisConnection(AwsConnection):
    """A Kinesis Data Streams endpoint and credentials (``connections.kinesis.NAME``).

    Unset credentials fall back to the standard AWS chain; an unset endpoint to
    ``AWS_ENDPOINT_URL_KINESIS`` or AWS.
    """


class DynamoDBConnection(AwsConnection):
    """A DynamoDB (and DynamoDB Streams) endpoint and credentials
    (``connections.dynamodb.NAME``).

    One endpoint serves both APIs (moto, LocalStack); unset credentials fall back to the
    standard AWS chain, an unset endpoint to ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS`` /
    ``AWS_ENDPOINT_URL_DYNAMODB`` or AWS.
    """


class Connections(ConfigModel):
    """Named broker connections, referenced by triggers and destinations."""

    kafka: dict[str, KafkaConnection] = Field(
        default_factory=dict, description="Kafka clusters by name."
    )
    redis: dict[str, RedisConnection] = Field(
        default_factory=dict, description="Redis servers by name."
    )
    sqs: dict[str, SqsConnection] = Field(
        default_factory=dict, description="SQS endpoints by name."
    )
    kinesis: dict[str, KinesisConnection] = Field(
        default_factory=dict, description="Kinesis Data Streams endpoints by name."
    )
    dynamodb: dict[str, DynamoDBConnection] = Field(
        default_factory=dict, description="DynamoDB (Streams) endpoints by name."
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (bracketed or not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AuthConfig(ConfigModel):
    """Bearer-token auth for the Invoke API and function URLs."""

    tokens_env: str | None = Field(
        "EVENTRUN_TOKENS",
        description="Environment variable holding comma-separated bearer tokens.",
    )
    mode: Literal["token", "none"] = Field(
        "token", description="token: require a bearer token; none: no auth (loopback only)."
    )

    @model_validator(mode="after")
    def _tokens_named(self) -> AuthConfig:
        if self.mode == "token" and not self.tokens_env:
            raise problem("must name an environment variable when mode is token", at="tokens_env")
        return self

    def tokens(self, environ: Mapping[str, str] | None = None) -> frozenset[str]:
        """The accepted tokens: ``tokens_env``'s value split on commas, blanks dropped."""
        raw = (os.environ if environ is None else environ).get(self.tokens_env or "", "")
        return frozenset(token.strip() for token in raw.split(",") if token.strip())


class ServerConfig(ConfigModel):
    """The daemon's one HTTP server: Invoke API, function URLs, health, metrics."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: Annotated[Int, Range(0, 65535)] = Field(9000, description="Port (0: pick a free one).")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API authentication.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values answered besides the bind address, localhost, "
        "127.0.0.1 and [::1] (each with or without the port); others get 421. Names a "
        "proxy or DNS gives the daemon; ['*'] accepts any Host (see docs/security.md).",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are trusted (client address, https). Empty: none.",
    )
    request_head_timeout: Annotated[Duration, Range(0.1, 300, duration=True)] = Field(
        10.0,
        description="A new connection must send a complete request head (request line and "
        "headers) within this time, or it is closed (408 when part of a head arrived). A "
        "kept-alive connection must complete its next head within keep_alive_timeout plus "
        "this time of its previous response (checked once per this time).",
    )
    keep_alive_timeout: Annotated[Duration, Range(1, 3600, duration=True)] = Field(
        30.0,
        description="An idle kept-alive connection is closed after this time (whole seconds). "
        "Keep it above the idle timeout of a load balancer in front of the daemon.",
    )
    max_request_head_bytes: Annotated[Int, Range(1024, 64 * 1024 * 1024)] = Field(
        64 * 1024,
        description="Largest request head: the request target plus every header name and "
        "value, in bytes; a larger one is answered 431 and the connection closed.",
    )
    max_request_headers: Annotated[Int, Range(8, 1_000_000)] = Field(
        200, description="Most header lines in one request; more are answered 431."
    )
    max_connections: Annotated[Int, Range(16, 1_000_000)] = Field(
        2048,
        description="Open connections (or requests in progress) above which requests are "
        "answered 503; /healthz and /readyz are still answered.",
    )
    max_connections_per_client: Annotated[Int, Range(0, 1_000_000)] = Field(
        256,
        description="Open connections one peer address may hold; a further one is answered "
        "503 and closed at once. 0: no cap. Behind a reverse proxy every connection comes "
        "from the proxy: raise it or set 0.",
    )

    @model_validator(mode="after")
    def _not_open(self) -> ServerConfig:
        if self.auth.mode == "none" and not is_loopback(self.host):
            raise problem(
                f"must be token when server.host is not loopback ({self.host}); "
                "the Invoke API would be open to the network",
                at="auth.mode",
                got=self.auth.mode,
            )
        return self


class StoreConfig(ConfigModel):
    """Where eventrun keeps its state (DLQs, async queue, cursors)."""

    url: str = Field(
        "sqlite:///.eventrun/state.db",
        description="sqlite:///relative.db (to the config file), sqlite:////abs/path.db, "
        "or redis://host:6379/0 / rediss://... to share state between replicas.",
    )
    max_queue_depth: Annotated[Int, Range(1)] = Field(
        100_000,
        description="Most entries any one store queue (async:FUNCTION, local:NAME) holds; "
        "a full queue refuses puts (Invoke API: 429, local: sinks: retried, record kept).",
    )
    max_queue_bytes: Annotated[Int, Range(1)] = Field(
        1 << 30,
        description="Most payload bytes any one store queue holds (default 1 GiB).",
    )
    dlq_retention: Annotated[Duration, Range(60, duration=True, forever=True)] = Field(
        1_209_600.0,
        description="local: queue (DLQ) entries older than this are deleted by a sweep "
        "every minute (default 14d, SQS's longest retention; -1: never).",
    )
    dlq_max_depth: Annotated[Int, Range(1)] | None = Field(
        None,
        description="When set, the sweep also deletes the oldest entries of a local: queue "
        "beyond this many (unset: only the max_queue_depth cap, which refuses new ones).",
    )

    @field_validator("url")
    @classmethod
    def _form(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > 10:
            return value
        if scheme in ("redis", "rediss") and urlsplit(value).netloc:
            return value
        raise problem("must be sqlite:///relative.db, sqlite:////abs.db or redis://host:port/db")

    @property
    def kind(self) -> Literal["sqlite", "redis"]:
        return "sqlite" if self.url.startswith("sqlite:") else "redis"

    def sqlite_path(self, config_dir: Path) -> Path:
        """The database file, relative paths resolved against ``config_dir``.

        Raises :class:`ValueError` for a Redis store.
        """
        if self.kind != "sqlite":
            raise ValueError(f"not a sqlite store: {self.redacted_url()}")
        return config_dir / self.url[len("sqlite:///") :]

    def redacted_url(self) -> str:
        """The URL with any password replaced by ``***``."""
        return _redact(self.url)
