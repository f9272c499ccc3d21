"""A function's ``Events``, one mapper per SAM event type, each to an eventrun trigger.

``MAPPERS`` holds the types this eventrun runs; ``NOT_YET`` the ones whose source another
open issue brings (adding one is one entry in ``MAPPERS``); any other type is reported as
unsupported with a reason. A mapper reads the event's properties through the resolver, so
intrinsics resolve to local values, and raises :class:`TemplateProblem` naming the
property path for what it cannot map.

Why this module is over 400 lines: one small mapper per SAM event type, next to the
helpers they share (filters, batching, stream controls) and the table registering them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventrun.config import TRIGGER_KINDS, plugin_models

from ._errors import Path, TemplateProblem, as_list, as_mapping, as_number
from ._template import Template

__all__ = [
    "MAPPERS",
    "NOT_YET",
    "UNSUPPORTED",
    "EventContext",
    "Unsupported",
    "cors_v2",
    "enabled",
]


class Unsupported(Exception):
    """An event (or function) eventrun cannot run; ``run --skip-unsupported`` skips it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = list(path)
        self.message = message


@dataclass
class EventContext:
    """What a mapper needs: the template, the function, the event and where to put
    connections it creates."""

    template: Template
    function: str
    name: str
    props: dict[str, Any]
    path: list[str | int]
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Connections the event needs, by section (``kafka``, ``sqs``) and name."""
    notes: list[str] = field(default_factory=list)

    def get(self, key: str, default: object = None) -> Any:
        if key not in self.props:
            return default
        return self.template.resolver.resolve(self.props[key], [*self.path, key])

    def at(self, *keys: str | int) -> list[str | int]:
        return [*self.path, *keys]

    def note(self, key: str, why: str) -> None:
        if key in self.props:
            self.notes.append(f"{self.function}.{self.name}.{key}: {why}")


Mapper = Callable[[EventContext], dict[str, Any] | None]


def enabled(ctx: EventContext) -> bool:
    enabled = ctx.get("Enabled", True)
    state = ctx.get("State", "ENABLED")
    if enabled in (False, "false", "False") or str(state).upper() == "DISABLED":
        ctx.notes.append(f"{ctx.function}.{ctx.name}: disabled in the template, not started")
        return False
    return True


def _filters(ctx: EventContext) -> dict[str, Any] | None:
    criteria = ctx.get("FilterCriteria")
    if criteria is None:
        return None
    filters = criteria.get("Filters") if isinstance(criteria, dict) else None
    if not isinstance(filters, list) or not filters:
        raise TemplateProblem(
            ctx.at("FilterCriteria"), "must be {Filters: [{Pattern: ...}]}", criteria
        )
    out = []
    for i, item in enumerate(filters):
        pattern = item.get("Pattern") if isinstance(item, dict) else None
        if isinstance(pattern, dict):
            pattern = json.dumps(pattern)
        if not isinstance(pattern, str):
            raise TemplateProblem(
                ctx.at("FilterCriteria", "Filters", i, "Pattern"), "must be a JSON string", pattern
            )
        out.append({"pattern": pattern})
    return {"filters": out}


def _common_batch(ctx: EventContext, out: dict[str, Any]) -> dict[str, Any]:
    if "BatchSize" in ctx.props:
        out["batch_size"] = as_number(ctx.get("BatchSize"), ctx.at("BatchSize"))
    if "MaximumBatchingWindowInSeconds" in ctx.props:
        key = "MaximumBatchingWindowInSeconds"
        out["maximum_batching_window"] = as_number(ctx.get(key), ctx.at(key), float)
    filters = _filters(ctx)
    if filters is not None:
        out["filter_criteria"] = filters
    types = as_list(ctx.get("FunctionResponseTypes"), ctx.at("FunctionResponseTypes"))
    if "ReportBatchItemFailures" in types:
        out["report_batch_item_failures"] = True
    return out


def _sqs(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    arn = ctx.get("Queue")
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise TemplateProblem(ctx.at("Queue"), "must be a queue ARN (!GetAtt Queue.Arn)", arn)
    refs = ctx.template.refs
    lid = refs.queue_by_arn(arn)
    out: dict[str, Any] = {}
    if lid is not None:
        queue = refs.queue(lid)
        out["queue_name"] = queue.name
        if queue.connection:
            out["connection"] = queue.connection
    else:
        binding = refs.bindings.get(arn)
        out["queue_name"] = arn.rsplit(":", 1)[-1]
        if binding is not None and binding.sqs:
            out["connection"] = binding.sqs
            if binding.queue:
                out["queue_name"] = binding.queue.rstrip("/").rsplit("/", 1)[-1]
    _common_batch(ctx, out)
    scaling = as_mapping(ctx.get("ScalingConfig"), ctx.at("ScalingConfig"))
    if "MaximumConcurrency" in scaling:
        at = ctx.at("ScalingConfig", "MaximumConcurrency")
        out["maximum_concurrency"] = as_number(scaling["MaximumConcurrency"], at)
    return {"sqs": out}


def _cron_input(ctx: EventContext, key: str = "Input") -> dict[str, Any]:
    text = ctx.get(key)
    if text is None:
        return {}
    try:
        return {"input": json.loads(text) if isinstance(text, str) else text}
    except ValueError:
        raise TemplateProblem(ctx.at(key), "must be a JSON text", text) from None


def _schedule(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    expr = ctx.get("Schedule")
    if not isinstance(expr, str):
        raise TemplateProblem(
            ctx.at("Schedule"), "must be a cron(...) or rate(...) expression", expr
        )
    for key in ("DeadLetterConfig", "RetryPolicy"):
        ctx.note(key, "ignored: a failed scheduled invocation follows the function's retries")
    return {"cron": {"schedule": expr, **_cron_input(ctx)}}


def _schedule_v2(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    expr = ctx.get("ScheduleExpression")
    if not isinstance(expr, str):
        raise TemplateProblem(
            ctx.at("ScheduleExpression"),
            "must be a cron(...), rate(...) or at(...) expression",
            expr,
        )
    out: dict[str, Any] = {"schedule": expr, **_cron_input(ctx)}
    zone = ctx.get("ScheduleExpressionTimezone")
    if zone:
        out["timezone"] = str(zone)
    for key in ("StartDate", "EndDate", "FlexibleTimeWindow", "DeadLetterConfig", "RetryPolicy"):
        ctx.note(key, "ignored by eventrun's cron trigger")
    return {"cron": out}


def _methods(ctx: EventContext, default: str) -> list[str]:
    method = str(ctx.get("Method", default)).upper()
    return ["*"] if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD", "*") else [method]


def _api_property(ctx: EventContext, key: str, section: str, prop: str) -> Any:
    """``prop`` of the event's API: the explicit API resource's (``RestApiId`` /
    ``ApiId``), else ``Globals.Api`` / ``Globals.HttpApi``'s."""
    tpl = ctx.template
    api = ctx.props.get(key)
    if isinstance(api, dict) and isinstance(api.get("Ref"), str) and api["Ref"] in tpl.resources:
        value = tpl.refs.prop(api["Ref"], prop)
        if value is not None:
            return value
    globs = as_mapping(as_mapping(tpl.data.get("Globals"), ["Globals"]).get(section), [section])
    if prop in globs:
        return tpl.resolver.resolve(globs[prop], ["Globals", section, prop])
    return None


def _stage(ctx: EventContext, key: str, section: str, implicit: str) -> str:
    stage = _api_property(ctx, key, section, "StageName")
    return str(stage) if stage else implicit


def _unquote(value: object) -> str:
    """REST API Cors values are quoted header values: ``"'*'"`` -> ``*``."""
    text = str(value).strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def _split(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in _unquote(value).split(",") if v.strip()]


def _cors(ctx: EventContext, key: str, section: str) -> dict[str, Any] | None:
    """The API's CORS (``Cors`` of a REST API, ``CorsConfiguration`` of an HTTP API) as
    the trigger's ``cors``."""
    if section != "Api":
        cors = _api_property(ctx, key, section, "CorsConfiguration")
        if cors is None or cors is False:
            return None
        if cors is True:
            return {"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]}
        return cors_v2(cors, [section, "CorsConfiguration"])
    cors = _api_property(ctx, key, section, "Cors")
    if cors is None:
        return None
    if not isinstance(cors, dict):
        return {"allow_origins": [_unquote(cors)]}
    out: dict[str, Any] = {"allow_origins": [_unquote(cors.get("AllowOrigin", "'*'"))]}
    for prop, name in (("AllowMethods", "allow_methods"), ("AllowHeaders", "allow_headers")):
        if prop in cors:
            out[name] = _split(cors[prop])
    _cors_common(cors, out, [section, "Cors"])
    return out


def cors_v2(cors: object, where: Path) -> dict[str, Any]:
    """An HTTP API's ``CorsConfiguration`` or a function URL's ``Cors`` as ``cors``."""
    cors = as_mapping(cors, where)
    out: dict[str, Any] = {"allow_origins": _split(cors.get("AllowOrigins", []))}
    for prop, name in (
        ("AllowMethods", "allow_methods"),
        ("AllowHeaders", "allow_headers"),
        ("ExposeHeaders", "expose_headers"),
    ):
        if prop in cors:
            out[name] = _split(cors[prop])
    _cors_common(cors, out, where)
    return out


def _cors_common(cors: dict[str, Any], out: dict[str, Any], where: Path) -> None:
    if "MaxAge" in cors:
        out["max_age"] = as_number(_unquote(cors["MaxAge"]), [*where, "MaxAge"])
    if "AllowCredentials" in cors:
        out["allow_credentials"] = cors["AllowCredentials"] in (True, "true", "'true'")


def _api(ctx: EventContext) -> dict[str, Any] | None:
    path = ctx.get("Path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise TemplateProblem(ctx.at("Path"), "must be a path starting with /", path)
    ctx.note("Auth", "ignored: routes are public locally, as with sam local start-api")
    return {
        "http": {
            "path": path,
            "methods": _methods(ctx, "ANY"),
            "auth": "none",
            "payload_format": "1.0",
            "stage": _stage(ctx, "RestApiId", "Api", "Prod"),
            **_optional("cors", _cors(ctx, "RestApiId", "Api")),
        }
    }


def _http_api(ctx: EventContext) -> dict[str, Any] | None:
    path = ctx.get("Path")
    if path is None:
        path, methods = "/{proxy+}", ["*"]  # the $default route
    elif not isinstance(path, str) or not path.startswith("/"):
        raise TemplateProblem(ctx.at("Path"), "must be a path starting with /", path)
    else:
        methods = _methods(ctx, "ANY")
    version = str(ctx.get("PayloadFormatVersion", "2.0"))
    if version not in ("1.0", "2.0"):
        raise TemplateProblem(ctx.at("PayloadFormatVersion"), 'must be "1.0" or "2.0"', version)
    ctx.note("Auth", "ignored: routes are public locally, as with sam local start-api")
    out: dict[str, Any] = {"path": path, "methods": methods, "auth": "none"}
    if version == "1.0":
        out["payload_format"] = "1.0"
    stage = _stage(ctx, "ApiId", "HttpApi", "$default")
    if stage != "$default":
        out["stage"] = stage
    out.update(_optional("cors", _cors(ctx, "ApiId", "HttpApi")))
    return {"http": out}


def _optional(key: str, value: object) -> dict[str, Any]:
    return {} if value is None else {key: value}


_S3_EVENTS = {"s3:ObjectCreated": "created", "s3:ObjectRemoved": "removed"}


def _s3(ctx: EventContext) -> dict[str, Any] | None:
    bucket = ctx.props.get("Bucket")
    lid = bucket.get("Ref") if isinstance(bucket, dict) else None
    if not isinstance(lid, str) or ctx.template.refs.type_of(lid) != "AWS::S3::Bucket":
        raise TemplateProblem(
            ctx.at("Bucket"), "must be !Ref of an AWS::S3::Bucket of this template", bucket
        )
    refs = ctx.template.refs
    binding = refs.bindings.get(lid)
    directory = binding.directory if binding is not None and binding.directory else None
    path = directory or f"buckets/{refs.bucket_name(lid)}"
    names = ctx.get("Events")
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names:
        raise TemplateProblem(
            ctx.at("Events"), "must be s3:ObjectCreated:* and/or s3:ObjectRemoved:*", names
        )
    events: list[str] = []
    for i, name in enumerate(names):
        kind = _S3_EVENTS.get(":".join(str(name).split(":")[:2]))
        if kind is None:
            raise TemplateProblem(
                ctx.at("Events", i),
                "must be an s3:ObjectCreated:* or s3:ObjectRemoved:* event",
                name,
            )
        if kind not in events:
            events.append(kind)
    out: dict[str, Any] = {"path": path, "events": events}
    pattern = _key_pattern(ctx)
    if pattern != "*":
        out["patterns"] = [pattern]
    return {"filewatch": out}


def _key_pattern(ctx: EventContext) -> str:
    where = ctx.at("Filter")
    s3key = as_mapping(as_mapping(ctx.get("Filter"), where).get("S3Key"), [*where, "S3Key"])
    rules = as_list(s3key.get("Rules"), [*where, "S3Key", "Rules"])
    prefix = suffix = ""
    for i, rule in enumerate(rules):
        name = str(rule.get("Name", "")).lower() if isinstance(rule, dict) else ""
        if name not in ("prefix", "suffix"):
            raise TemplateProblem(
                ctx.at("Filter", "S3Key", "Rules", i, "Name"), "must be prefix or suffix", rule
            )
        if name == "prefix":
            prefix = str(rule.get("Value", ""))
        else:
            suffix = str(rule.get("Value", ""))
    return _glob_escape(prefix) + "*" + _glob_escape(suffix)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text) if text else ""


def _kafka_common(ctx: EventContext, out: dict[str, Any]) -> dict[str, Any]:
    topics = ctx.get("Topics")
    if not isinstance(topics, list) or not topics:
        raise TemplateProblem(ctx.at("Topics"), "must be a list of topic names", topics)
    out["topics"] = [str(t) for t in topics]
    if "ConsumerGroupId" in ctx.props:
        out["group_id"] = str(ctx.get("ConsumerGroupId"))
    position = ctx.get("StartingPosition")
    if position is not None:
        out["starting_position"] = str(position)
    if "StartingPositionTimestamp" in ctx.props:
        key = "StartingPositionTimestamp"
        out["starting_position_timestamp"] = as_number(ctx.get(key), ctx.at(key), float)
    _common_batch(ctx, out)
    _on_failure(ctx, out)
    return out


def _on_failure(ctx: EventContext, out: dict[str, Any]) -> None:
    """``DestinationConfig.OnFailure`` of a poller event -> the trigger's ``on_failure``: an
    SQS queue, or (Kafka) ``kafka://TOPIC`` on the event's own connection."""
    where = ctx.at("DestinationConfig")
    config = as_mapping(ctx.get("DestinationConfig"), where)
    failure = as_mapping(config.get("OnFailure"), [*where, "OnFailure"])
    target = failure.get("Destination")
    if target is None:
        return
    path = [*where, "OnFailure", "Destination"]
    if isinstance(target, str) and target.startswith("kafka://") and "connection" in out:
        out["on_failure"] = f"kafka:{out['connection']}/{target[len('kafka://') :]}"
        return
    out["on_failure"] = ctx.template.refs.destination(
        target, failure.get("Type"), path, ctx.connections
    )


def _self_managed_kafka(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    key = f"{ctx.function}.{ctx.name}"
    binding = ctx.template.refs.bindings.get(key)
    if binding is not None and binding.kafka:
        conn = binding.kafka
    else:
        servers = ctx.get("KafkaBootstrapServers")
        if not isinstance(servers, list) or not servers:
            raise TemplateProblem(
                ctx.at("KafkaBootstrapServers"), "must be a list of host:port", servers
            )
        if "SourceAccessConfigurations" in ctx.props:
            raise TemplateProblem(
                ctx.at("SourceAccessConfigurations"),
                "holds AWS Secrets Manager credentials: define the connection in eventrun.yaml "
                f"and bind it (bindings: {{{key}: {{kafka: NAME}}}})",
            )
        conn = f"{ctx.function}-{ctx.name}"
        ctx.connections.setdefault("kafka", {})[conn] = {
            "bootstrap_servers": [str(s) for s in servers]
        }
    return {"kafka": _kafka_common(ctx, {"connection": conn})}


def _msk(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    raw = ctx.props.get("Stream")
    lid = raw.get("Ref") if isinstance(raw, dict) and isinstance(raw.get("Ref"), str) else None
    refs = ctx.template.refs
    binding = refs.bindings.get(lid) if lid else None
    if binding is None and isinstance(raw, str):
        binding = refs.bindings.get(raw)
    if binding is None or not binding.kafka:
        raise TemplateProblem(
            ctx.at("Stream"),
            "is an MSK cluster: bind it to a Kafka connection in eventrun.yaml "
            "(bindings: {CLUSTER_ARN_OR_LOGICAL_ID: {kafka: NAME}}) and pass it with -c",
            raw,
        )
    arn = ctx.get("Stream")
    out = _kafka_common(ctx, {"connection": binding.kafka, "event_source_arn": str(arn)})
    if binding.topic:
        out["topics"] = [binding.topic]
    return {"kafka": out}


def _stream_controls(ctx: EventContext, out: dict[str, Any]) -> dict[str, Any]:
    """Kinesis / DynamoDB Streams event properties shared with the stream triggers."""
    position = ctx.get("StartingPosition")
    if position is not None:
        out["starting_position"] = str(position)
    if "StartingPositionTimestamp" in ctx.props:
        key = "StartingPositionTimestamp"
        out["starting_position_timestamp"] = as_number(ctx.get(key), ctx.at(key), float)
    _common_batch(ctx, out)
    for key, name, kind in (
        ("ParallelizationFactor", "parallelization_factor", int),
        ("BisectBatchOnFunctionError", "bisect_batch_on_function_error", bool),
        ("MaximumRetryAttempts", "maximum_retry_attempts", int),
        ("MaximumRecordAgeInSeconds", "maximum_record_age", float),
        ("TumblingWindowInSeconds", "tumbling_window", float),
    ):
        if key in ctx.props:
            value = ctx.get(key)
            out[name] = (
                value in (True, "true", "True")
                if kind is bool
                else as_number(value, ctx.at(key), kind)
            )
    _on_failure(ctx, out)
    return out


def _kinesis(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    stream = ctx.get("Stream")
    if not isinstance(stream, str) or not stream:
        raise TemplateProblem(ctx.at("Stream"), "must be a Kinesis stream ARN", stream)
    name = stream.split(":stream/", 1)[1] if ":stream/" in stream else stream
    return {"kinesis": _stream_controls(ctx, {"stream": name})}


def _dynamodb(ctx: EventContext) -> dict[str, Any] | None:
    if not enabled(ctx):
        return None
    stream = ctx.get("Stream")
    if not isinstance(stream, str) or ":table/" not in stream:
        raise TemplateProblem(ctx.at("Stream"), "must be a DynamoDB stream ARN", stream)
    table = stream.split(":table/", 1)[1].split("/", 1)[0]
    return {"dynamodb_streams": _stream_controls(ctx, {"table": table})}


def _mq(ctx: EventContext) -> dict[str, Any] | None:
    """Amazon MQ for RabbitMQ -> the RabbitMQ plugin's ``rabbitmq`` trigger on the
    connection the broker is bound to (the vhost is the connection URL's)."""
    if not enabled(ctx):
        return None
    raw = ctx.props.get("Broker")
    lid = None
    if isinstance(raw, dict):
        ref = raw.get("Ref") or raw.get("Fn::GetAtt")
        lid = ref[0] if isinstance(ref, list) and ref else ref if isinstance(ref, str) else None
    refs = ctx.template.refs
    binding = refs.bindings.get(lid) if lid else None
    if binding is None and not isinstance(raw, dict):
        arn = ctx.get("Broker")
        binding = refs.bindings.get(arn) if isinstance(arn, str) else None
    if binding is None or not binding.rabbitmq:
        raise TemplateProblem(
            ctx.at("Broker"),
            "is an Amazon MQ broker: bind it to a RabbitMQ connection in eventrun.yaml "
            "(bindings: {BROKER_ARN_OR_LOGICAL_ID: {rabbitmq: NAME}}) and pass it with -c",
            raw,
        )
    queues = ctx.get("Queues")
    if not isinstance(queues, list) or len(queues) != 1:
        raise TemplateProblem(ctx.at("Queues"), "must list exactly one queue (as Lambda)", queues)
    out: dict[str, Any] = {"connection": binding.rabbitmq, "queue": str(queues[0])}
    return {"rabbitmq": _common_batch(ctx, out)}


MAPPERS: dict[str, Mapper] = {
    "SQS": _sqs,
    "Schedule": _schedule,
    "ScheduleV2": _schedule_v2,
    "Api": _api,
    "HttpApi": _http_api,
    "S3": _s3,
    "SelfManagedKafka": _self_managed_kafka,
    "MSK": _msk,
}
"""SAM event type -> mapper returning one ``{KIND: {...}}`` trigger (None: disabled)."""

NOT_YET: dict[str, str] = {
    "Kinesis": "issue #25",
    "DynamoDB": "issue #25",
    "MQ": "install the eventrun-rabbitmq plugin: pip install -e plugins/eventrun-rabbitmq",
}
"""Event types whose source is not installed (or another open issue brings)."""

# Mapped as soon as this eventrun has their trigger kinds (issue #25's SPEC §12 names).
for _type, _kind, _mapper in (
    ("Kinesis", "kinesis", _kinesis),
    ("DynamoDB", "dynamodb_streams", _dynamodb),
):
    if _kind in TRIGGER_KINDS:
        MAPPERS[_type] = _mapper
        NOT_YET.pop(_type)

# Amazon MQ (RabbitMQ) maps onto the RabbitMQ plugin's trigger when it is installed.
if "rabbitmq" in plugin_models().triggers:
    MAPPERS["MQ"] = _mq
    NOT_YET.pop("MQ")

UNSUPPORTED: dict[str, str] = {
    "SNS": "eventrun has no SNS topic source",
    "EventBridgeRule": "eventrun has no EventBridge bus (only schedules)",
    "CloudWatchEvent": "eventrun has no EventBridge bus (only schedules)",
    "CloudWatchLogs": "eventrun has no CloudWatch Logs source",
    "IoTRule": "eventrun has no IoT source",
    "AlexaSkill": "an Alexa skill invokes from AWS only",
    "Cognito": "a Cognito trigger invokes from AWS only",
    "DocumentDB": "eventrun has no DocumentDB change stream source",
}


def unsupported_reason(kind: str) -> str:
    if kind in NOT_YET:
        return f"not supported yet by this eventrun: {kind} ({NOT_YET[kind]})"
    reason = UNSUPPORTED.get(kind, "not an event type eventrun knows")
    return f"not supported by eventrun: {kind} ({reason})"
