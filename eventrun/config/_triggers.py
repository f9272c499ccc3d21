"""Config models for triggers: one per source kind, plus the one-key list item.

Ranges and defaults are Lambda's event-source-mapping ones (see
``reference/lambda-semantics.md`` §1.1): batch_size 1..10000 (SQS default 10, FIFO
at most 10; streams 100), batching window 0..300 s (Kafka default 500 ms),
parallelization 1..10, retries -1..10000, record age -1 or 60 s..7 d. Values that
the runtime derives from the function (group ids, consumer names) stay None here.

Why this module is over 400 lines: one declarative model per trigger kind, each a list of
fields with Lambda's ranges and defaults; splitting them would scatter the shared controls.
"""

from __future__ import annotations

import re
import time
import zoneinfo
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ._plugins import plugin_models
from ._routing import FilterCriteria, OnSuccess
from ._types import (
    NO_VALUE,
    ConfigModel,
    Destination,
    Duration,
    Int,
    Range,
    Verbatim,
    problem,
)

__all__ = [
    "TRIGGER_KINDS",
    "BatchControls",
    "CorsConfig",
    "CronTrigger",
    "DynamoDBStreamsTrigger",
    "FilewatchTrigger",
    "HttpTrigger",
    "KafkaTrigger",
    "KinesisTrigger",
    "RedisStreamsTrigger",
    "SqsTrigger",
    "TriggerConfig",
    "TriggerModel",
    "TriggerSpec",
]

BatchSize = Annotated[Int, Range(1, 10000)]
Window = Annotated[Duration, Range(0, 300, duration=True)]
NonEmpty = Annotated[str, Field(min_length=1)]


class TriggerModel(ConfigModel):
    """Base of a trigger kind's settings model (built-in or a plugin's): unknown keys are
    errors, instances are immutable, field descriptions become the generated docs and the
    JSON Schema. A plugin registers its subclass in the ``eventrun.triggers`` entry point
    group; a ``connection: str | None`` field names a ``connections.KIND.NAME``, which the
    config checks exists."""


class BatchControls(TriggerModel):
    """Lambda's batching and stream error controls, read by the dispatcher: shared by
    Kafka and Redis Streams and by plugin pollers (redeclare a field to change its default
    or range)."""

    batch_size: BatchSize = Field(100, description="Most records per invocation.")
    maximum_batching_window: Window = Field(
        0.5, description="Longest wait to fill a batch after its first record."
    )
    parallelization_factor: Annotated[Int, Range(1, 10)] = Field(
        1,
        description=(
            "Concurrent batches per partition/stream; a record key is in one batch at a"
            " time, so order holds per key."
        ),
    )
    bisect_batch_on_function_error: bool = Field(
        False, description="On failure, split the batch in two and retry the halves."
    )
    maximum_retry_attempts: Annotated[Int, Range(-1, 10000)] = Field(
        -1, description="Retries after the first attempt; -1 = until the record expires."
    )
    maximum_record_age: Annotated[Duration, Range(60, 604800, duration=True, forever=True)] = Field(
        -1.0, description="Discard (to on_failure) records older than this; -1 = never."
    )
    report_batch_item_failures: bool = Field(
        False, description='Honour {"batchItemFailures": [...]} in the handler result.'
    )
    filter_criteria: FilterCriteria | None = Field(
        None, description="Only records matching a pattern are delivered; others are acked."
    )
    on_failure: Destination | None = Field(
        None, description="Where records go after retries or record age run out."
    )
    on_success: OnSuccess | None = Field(
        None, description="Where handler results are published (pipelines)."
    )


class SqsTrigger(ConfigModel):
    """Poll an SQS queue (standard or FIFO)."""

    queue_url: str | None = Field(None, description="Queue URL (this or queue_name).")
    queue_name: str | None = Field(None, description="Queue name, resolved with GetQueueUrl.")
    connection: str | None = Field(
        None, description="connections.sqs name; unset: the standard AWS environment."
    )
    batch_size: BatchSize = Field(10, description="Most messages per invocation (FIFO: <= 10).")
    maximum_batching_window: Window = Field(0.0, description="Longest wait to fill a batch.")
    visibility_timeout: Annotated[Duration, Range(0, 43200, duration=True)] | None = Field(
        None, description="Visibility timeout for received messages; unset: the queue's."
    )
    maximum_concurrency: Annotated[Int, Range(2, 1000)] | None = Field(
        None, description="Cap on concurrent invocations by this trigger."
    )
    max_receive_count: Annotated[Int, Range(1)] | None = Field(
        None, description="After this many receives a message goes to on_failure."
    )
    report_batch_item_failures: bool = Field(
        False, description='Honour {"batchItemFailures": [...]} in the handler result.'
    )
    filter_criteria: FilterCriteria | None = Field(None, description="Message filters.")
    on_failure: Destination | None = Field(
        None, description="Where messages go after max_receive_count receives."
    )
    on_success: OnSuccess | None = Field(
        None, description="Where handler results are published (pipelines)."
    )

    @model_validator(mode="after")
    def _queue(self) -> SqsTrigger:
        if (self.queue_url is None) == (self.queue_name is None):
            got = "both" if self.queue_url is not None else "neither"
            raise problem("must set exactly one of queue_url, queue_name", got=Verbatim(got))
        if self.is_fifo and self.batch_size > 10:
            raise problem("must be 1..10 for a FIFO queue", at="batch_size", got=self.batch_size)
        return self

    @property
    def is_fifo(self) -> bool:
        return (self.queue_url or self.queue_name or "").endswith(".fifo")


def _parse_timestamp(value: object) -> object:
    if isinstance(value, bool):
        raise problem("must be epoch seconds or an ISO 8601 time")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise problem("must be epoch seconds or an ISO 8601 time") from None
        return _parse_timestamp(parsed)
    return value


Timestamp = Annotated[
    float,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}),
]


class KafkaTrigger(BatchControls):
    """Consume Kafka topics with a consumer group."""

    connection: str = Field(description="connections.kafka name.")
    topics: Annotated[list[NonEmpty], Field(min_length=1)] | None = Field(
        None, description="Topics to consume (this or topic_pattern)."
    )
    topic_pattern: str | None = Field(None, description="Regex of topics to subscribe to.")
    group_id: str | None = Field(None, description="Consumer group; unset: eventrun-FUNCTION.")
    starting_position: Literal["LATEST", "TRIM_HORIZON", "AT_TIMESTAMP"] = Field(
        "TRIM_HORIZON", description="Where a new consumer group starts."
    )
    starting_position_timestamp: Timestamp | None = Field(
        None, description="Epoch seconds or ISO 8601; required with AT_TIMESTAMP."
    )
    event_source_arn: str | None = Field(
        None,
        description="An Amazon MSK cluster ARN: events are Lambda's MSK events "
        '(eventSource "aws:kafka", eventSourceArn) instead of self-managed Kafka ones.',
    )

    @field_validator("topic_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise problem(f"must be a valid regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaTrigger:
        if (self.topics is None) == (self.topic_pattern is None):
            got = "both" if self.topics is not None else "neither"
            raise problem("must set exactly one of topics, topic_pattern", got=Verbatim(got))
        ts = self.starting_position_timestamp
        if self.starting_position == "AT_TIMESTAMP" and ts is None:
            raise problem(
                "required when starting_position is AT_TIMESTAMP",
                at="starting_position_timestamp",
                got=NO_VALUE,
            )
        if self.starting_position != "AT_TIMESTAMP" and ts is not None:
            raise problem(
                "only allowed when starting_position is AT_TIMESTAMP",
                at="starting_position_timestamp",
                got=ts,
            )
        if ts is not None and ts > time.time() + 60:
            when = datetime.fromtimestamp(ts, UTC).isoformat()
            raise problem("must not be in the future", at="starting_position_timestamp", got=when)
        return self


_ENTRY_ID = re.compile(r"\$|\d+(-\d+)?")


class RedisStreamsTrigger(BatchControls):
    """Read Redis streams with a consumer group (XREADGROUP)."""

    connection: str = Field(description="connections.redis name.")
    streams: Annotated[list[NonEmpty], Field(min_length=1)] = Field(description="Stream keys.")
    group: str | None = Field(None, description="Consumer group; unset: eventrun-FUNCTION.")
    starting_position: str = Field(
        "0", description='Where a new group starts: "$" new entries, "0" everything, or an id.'
    )
    consumer: str | None = Field(None, description="Consumer name; unset: HOSTNAME-PID.")
    key_field: str | None = Field(
        None, description="Entry field used as the ordering key for parallelization lanes."
    )
    claim_idle: Annotated[Duration, Range(0, 604800, duration=True)] = Field(
        60.0, description="Re-claim entries pending this long on dead consumers; 0 = never."
    )
    maximum_batching_window: Window = Field(
        0.0, description="Longest wait to fill a batch after its first record."
    )

    @field_validator("starting_position")
    @classmethod
    def _entry_id(cls, value: str) -> str:
        if not _ENTRY_ID.fullmatch(value):
            raise problem('must be "$", "0" or an entry id like 1700000000000-0')
        return value


_GREEDY = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\+\}")
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "*")


def _methods(value: object) -> object:
    if isinstance(value, list):
        upper = [v.upper() if isinstance(v, str) else v for v in value]
        for i, method in enumerate(upper):
            if method not in _METHODS:
                raise problem("must be one of " + ", ".join(_METHODS), at=str(i), got=value[i])
        return upper
    return value


class CorsConfig(ConfigModel):
    """CORS for a function URL, as Lambda Function URLs configure it."""

    allow_origins: list[str] = Field(default_factory=list, description='Origins, or ["*"].')
    allow_methods: list[str] = Field(default_factory=list, description="Allowed methods.")
    allow_headers: list[str] = Field(default_factory=list, description="Allowed headers.")
    expose_headers: list[str] = Field(default_factory=list, description="Exposed headers.")
    max_age: Annotated[Int, Range(0, 86400)] = Field(0, description="Preflight cache seconds.")
    allow_credentials: bool = Field(False, description="Allow cookies/credentials.")


class HttpTrigger(ConfigModel):
    """A function URL on the daemon's HTTP server (payload format 2.0)."""

    path: str = Field(
        description="URL path, starting with /; {name} segments are parameters, a last "
        "{name+} takes the rest of the path (API Gateway's {proxy+})."
    )
    methods: Annotated[list[str], BeforeValidator(_methods), Field(min_length=1)] = Field(
        default_factory=lambda: ["GET", "POST"], description='HTTP methods, or ["*"].'
    )
    auth: Literal["token", "none"] = Field(
        "token", description="token: require a bearer token; none: public."
    )
    cors: CorsConfig | None = Field(None, description="CORS headers; unset: none.")
    payload_format: Literal["2.0", "1.0"] = Field(
        "2.0",
        description='"2.0": HTTP API / function URL event; "1.0": REST API proxy event '
        "(API Gateway's payload format 1.0) and its response mapping.",
    )
    stage: str = Field("$default", description="requestContext.stage of the events.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise problem("must start with /")
        greedy = _GREEDY.search(value)
        if greedy is not None and greedy.end() != len(value):
            raise problem("may have a greedy {name+} parameter only as its last segment")
        return value


def _json_input(value: object, at: str = "") -> object:
    """YAML dates become ISO strings; anything that is not JSON is a problem at its path."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise problem("JSON object keys must be strings", at=at, got=key)
            out[key] = _json_input(item, f"{at}.{key}" if at else key)
        return out
    if isinstance(value, list):
        return [_json_input(v, f"{at}.{i}" if at else str(i)) for i, v in enumerate(value)]
    if value is None or isinstance(value, str | int | float):
        return value
    raise problem("must be JSON (null, boolean, number, string, list, mapping)", at=at, got=value)


class CronTrigger(ConfigModel):
    """Invoke on a schedule (cron, rate(...) or at(...) expressions)."""

    schedule: str = Field(
        description='"*/5 * * * *", "cron(0 12 * * ? *)", "rate(5 minutes)" or "at(...)".'
    )
    timezone: str = Field("UTC", description="IANA time zone the schedule is read in.")
    input: Annotated[JsonValue, BeforeValidator(_json_input)] = Field(
        None, description="Event to send (any JSON); unset: an EventBridge Scheduled Event."
    )
    catch_up: Annotated[Int, Range(0, 1000)] = Field(
        1, description="Missed ticks to fire after downtime (0 = none)."
    )
    overlap: Literal["allow", "skip", "queue"] = Field(
        "allow", description="When a tick fires while the previous run is still going."
    )
    on_success: OnSuccess | None = Field(None, description="Where results are published.")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not value.strip():
            raise problem("must be a non-empty schedule expression")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise problem("must be an IANA time zone like UTC or Europe/Paris") from None
        return value


FileEvent = Literal["created", "removed"]


class FilewatchTrigger(ConfigModel):
    """Invoke when files appear in (or disappear from) a directory."""

    path: NonEmpty = Field(description="Directory to watch, relative to the config file.")
    patterns: list[str] = Field(
        default_factory=lambda: ["*"], description="Glob patterns of file names to report."
    )
    ignore: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
    recursive: bool = Field(True, description="Watch subdirectories too.")
    events: Annotated[list[FileEvent], Field(min_length=1)] = Field(
        default_factory=lambda: list[FileEvent](["created"]), description="Which changes to report."
    )
    settle: Annotated[Duration, Range(0, 60, duration=True)] = Field(
        0.5, description="Quiet time before a file counts as complete."
    )
    batch_size: BatchSize = Field(1, description="Most files per invocation.")
    maximum_batching_window: Window = Field(0.0, description="Longest wait to fill a batch.")
    on_startup: Literal["existing", "none"] = Field(
        "none", description="existing: also report files already there at startup."
    )
    on_success: OnSuccess | None = Field(None, description="Where results are published.")

    def resolved_path(self, config_dir: Path) -> Path:
        """The watched directory, relative paths resolved against ``config_dir``."""
        return config_dir / self.path


from ._stream_triggers import DynamoDBStreamsTrigger, KinesisTrigger  # noqa: E402 (uses the above)

TriggerSpec: TypeAlias = (
    SqsTrigger
    | KafkaTrigger
    | RedisStreamsTrigger
    | KinesisTrigger
    | DynamoDBStreamsTrigger
    | HttpTrigger
    | CronTrigger
    | FilewatchTrigger
)
TRIGGER_KINDS = (
    "sqs",
    "kafka",
    "redis_streams",
    "kinesis",
    "dynamodb_streams",
    "http",
    "cron",
    "filewatch",
)


class TriggerConfig(ConfigModel):
    """One item of ``triggers``: a one-key mapping ``{KIND: {...settings}}``."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    sqs: SqsTrigger | None = Field(None, description="Poll an SQS queue.")
    kafka: KafkaTrigger | None = Field(None, description="Consume Kafka topics.")
    redis_streams: RedisStreamsTrigger | None = Field(None, description="Read Redis streams.")
    kinesis: KinesisTrigger | None = Field(None, description="Read a Kinesis data stream.")
    dynamodb_streams: DynamoDBStreamsTrigger | None = Field(
        None, description="Read a DynamoDB table's stream."
    )
    http: HttpTrigger | None = Field(None, description="A function URL.")
    cron: CronTrigger | None = Field(None, description="A schedule.")
    filewatch: FilewatchTrigger | None = Field(None, description="Watch a directory.")

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        known = list(cls.model_fields)
        kinds_text = ", ".join(known)
        broken = plugin_models().broken
        for key in data:
            if key not in known and key in broken:
                raise problem(f"the {key!r} trigger plugin could not be loaded: {broken[key]}")
        kinds = [k for k in data if k in known]
        if len(kinds) > 1:
            raise problem(
                f"must have exactly one trigger kind ({kinds_text})",
                got=Verbatim(" and ".join(kinds)),
            )
        if not data:
            raise problem(f"must have one trigger kind ({kinds_text})", got=Verbatim("nothing"))
        if kinds and data[kinds[0]] is None:
            raise problem(f"must be a mapping of {kinds[0]} settings", at=kinds[0], got=None)
        return data

    @property
    def kind(self) -> str:
        """``sqs``, ``kafka``, ``redis_streams``, ``kinesis``, ``dynamodb_streams``,
        ``http``, ``cron``, ``filewatch`` or a plugin's kind."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def spec(self) -> TriggerSpec | BaseModel:
        """The settings model of the one kind that is set (a plugin's own model for a
        plugin kind)."""
        spec: TriggerSpec | BaseModel = getattr(self, self.kind)
        return spec
