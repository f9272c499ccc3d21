"""What each template resource is here: names, ARNs, queue URLs, bucket directories.

``!Ref`` and ``!GetAtt`` of a resource resolve to real local values: a queue's URL on the
SQS endpoint it is bound to (a binding's connection, else the standard AWS environment:
``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL``), its ARN ``arn:aws:sqs:REGION:ACCOUNT:NAME``
and name (``QueueName``, else ``STACK-LogicalId``); a function's name and ARN; a bucket's
name (its directory: ``buckets/NAME/`` beside the template unless bound). A resource
type or attribute with no local meaning is an error naming it, unless a binding gives
its value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import Path, TemplateProblem, as_mapping

if TYPE_CHECKING:
    from ._intrinsics import Resolver

__all__ = ["FUNCTION_TYPES", "LAYER_TYPES", "QueueInfo", "References"]

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
QUEUE_ATTRIBUTES = {
    "VisibilityTimeout": "VisibilityTimeout",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "DelaySeconds": "DelaySeconds",
    "MaximumMessageSize": "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "FifoQueue": "FifoQueue",
    "ContentBasedDeduplication": "ContentBasedDeduplication",
}


@dataclass
class QueueInfo:
    """An ``AWS::SQS::Queue`` of the template, as it is here."""

    logical_id: str
    name: str
    url: str
    arn: str
    connection: str | None
    """``connections.sqs`` name (a binding's), None: the standard AWS environment."""
    bound: bool
    """A binding names an existing queue: eventrun does not create it."""
    attributes: dict[str, str] = field(default_factory=dict)
    """CreateQueue attributes from the template (RedrivePolicy as JSON)."""
    dead_letter: str | None = None
    """Logical id of the queue its RedrivePolicy sends to, when it is in the template."""


class References:
    """Ref/GetAtt of resources; ``resolver`` is set once the template's Resolver exists."""

    def __init__(
        self,
        *,
        resources: Mapping[str, Any],
        bindings: Mapping[str, Any],
        sqs_endpoints: Mapping[str, str | None],
        environ: Mapping[str, str],
        region: str,
        account: str,
        stack: str,
    ) -> None:
        self.resources = resources
        self.bindings = bindings
        self.sqs_endpoints = sqs_endpoints
        self.environ = environ
        self.region, self.account, self.stack = region, account, stack
        self.resolver: Resolver | None = None
        self._queues: dict[str, QueueInfo] = {}
        self._busy: set[str] = set()

    # -- helpers -------------------------------------------------------------------

    def type_of(self, lid: str) -> str:
        res = self.resources.get(lid)
        return str(res.get("Type", "")) if isinstance(res, dict) else ""

    def prop(self, lid: str, name: str, default: object = None) -> Any:
        assert self.resolver is not None
        props = as_mapping(self.resources[lid].get("Properties"), ["Resources", lid, "Properties"])
        if name not in props:
            return default
        if lid in self._busy:
            raise TemplateProblem(["Resources", lid, "Properties", name], "refers to itself")
        self._busy.add(lid)
        try:
            return self.resolver.resolve(props[name], ["Resources", lid, "Properties", name])
        finally:
            self._busy.discard(lid)

    def _named(self, lid: str, key: str) -> str:
        name = self.prop(lid, key)
        return str(name) if name else f"{self.stack}-{lid}"

    # -- queues ------------------------------------------------------------------------

    def sqs_endpoint(self, connection: str | None) -> str:
        if connection is not None and self.sqs_endpoints.get(connection):
            return str(self.sqs_endpoints[connection]).rstrip("/")
        env = self.environ
        found = env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL")
        return found.rstrip("/") if found else f"https://sqs.{self.region}.amazonaws.com"

    def queue(self, lid: str) -> QueueInfo:
        """The queue ``lid`` (an ``AWS::SQS::Queue``), resolved once."""
        if lid in self._queues:
            return self._queues[lid]
        binding = self.bindings.get(lid)
        connection = binding.sqs if binding is not None else None
        fifo = bool(self.prop(lid, "FifoQueue", False) in (True, "true", "True"))
        name = self.prop(lid, "QueueName")
        if name is not None and not isinstance(name, str):
            raise TemplateProblem(
                ["Resources", lid, "Properties", "QueueName"], "must be a string", name
            )
        if not name:
            name = f"{self.stack}-{lid}" + (".fifo" if fifo else "")
        name = str(name)
        bound_queue = binding.queue if binding is not None else None
        if bound_queue:
            name = bound_queue.rstrip("/").rsplit("/", 1)[-1]
        url = (
            bound_queue
            if bound_queue and bound_queue.startswith(("http://", "https://"))
            else f"{self.sqs_endpoint(connection)}/{self.account}/{name}"
        )
        info = QueueInfo(
            logical_id=lid,
            name=name,
            url=url,
            arn=f"arn:aws:sqs:{self.region}:{self.account}:{name}",
            connection=connection,
            bound=bool(bound_queue),
        )
        self._queues[lid] = info
        for key, attr in QUEUE_ATTRIBUTES.items():
            value = self.prop(lid, key)
            if value is not None:
                info.attributes[attr] = _attr(value)
        redrive = self.prop(lid, "RedrivePolicy")
        if redrive is not None:
            info.attributes["RedrivePolicy"], info.dead_letter = self._redrive(lid, redrive)
        return info

    def _redrive(self, lid: str, redrive: Any) -> tuple[str, str | None]:
        path = ["Resources", lid, "Properties", "RedrivePolicy"]
        if isinstance(redrive, str):
            try:
                redrive = json.loads(redrive)
            except ValueError:
                raise TemplateProblem(path, "must be a mapping or a JSON text", redrive) from None
        if not isinstance(redrive, dict) or "deadLetterTargetArn" not in redrive:
            raise TemplateProblem(
                path, "must have deadLetterTargetArn and maxReceiveCount", redrive
            )
        target = str(redrive["deadLetterTargetArn"])
        dead = self.queue_by_arn(target)
        policy = {
            "deadLetterTargetArn": target,
            "maxReceiveCount": str(redrive.get("maxReceiveCount", 10)),
        }
        return json.dumps(policy), dead

    def queue_by_arn(self, arn: str) -> str | None:
        """The logical id of the template queue with this ARN, if any."""
        for lid in self.resources:
            if self.type_of(lid) == "AWS::SQS::Queue" and self.queue(lid).arn == arn:
                return lid
        return None

    def queues(self) -> list[QueueInfo]:
        return [self.queue(lid) for lid in self.resources if self.type_of(lid) == "AWS::SQS::Queue"]

    # -- Ref / GetAtt ------------------------------------------------------------------

    def function_name(self, lid: str) -> str:
        return self._named_fn(lid)

    def _named_fn(self, lid: str) -> str:
        name = self.prop(lid, "FunctionName")
        return str(name) if name else lid

    def layer_arn(self, lid: str) -> str:
        return self._arn("lambda", f"layer:{self._named_fn_like(lid, 'LayerName')}:1")

    def _named_fn_like(self, lid: str, key: str) -> str:
        name = self.prop(lid, key)
        return str(name) if name else lid

    def bucket_name(self, lid: str) -> str:
        binding = self.bindings.get(lid)
        if binding is not None and binding.directory:
            return str(binding.directory).rstrip("/").rsplit("/", 1)[-1]
        name = self.prop(lid, "BucketName")
        return str(name) if name else lid

    def destination(
        self, value: object, kind: object, path: Path, connections: dict[str, Any]
    ) -> str:
        """A destination ARN as an eventrun destination: a queue -> ``sqs:CONN/NAME`` (a
        template queue's connection, a binding's, else ``aws``: the standard AWS
        environment, added to ``connections``), a function -> ``function:LogicalId``."""
        if not isinstance(value, str):
            raise TemplateProblem(path, "must be an ARN", value)
        service = value.split(":")[2] if value.startswith("arn:") and value.count(":") >= 5 else ""
        if service == "sqs":
            lid = self.queue_by_arn(value)
            if lid is not None:
                conn, name = self.queue(lid).connection or "aws", self.queue(lid).name
            else:
                binding = self.bindings.get(value)
                conn = binding.sqs if binding is not None and binding.sqs else "aws"
                name = value.rsplit(":", 1)[-1]
            if conn == "aws":
                connections.setdefault("sqs", {})["aws"] = {}
            return f"sqs:{conn}/{name}"
        if service == "lambda":
            name = value.split(":")[6]
            lids = [lid for lid in self.resources if self.type_of(lid) in FUNCTION_TYPES]
            return "function:" + next((f for f in lids if self.function_name(f) == name), name)
        raise TemplateProblem(
            path,
            f"must be an SQS queue or a Lambda function here (a {kind or service} destination "
            "has no local counterpart)",
            value,
        )

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"

    def ref(self, lid: str, path: Path) -> object:
        binding = self.bindings.get(lid)
        if binding is not None and binding.value is not None:
            return binding.value
        kind = self._known(lid, path)
        handler = _REFS.get(kind)
        if handler is None:
            raise TemplateProblem(
                path,
                f"!Ref of a {kind} resource has no local value: bind it in eventrun.yaml "
                f"(bindings: {{{lid}: {{value: ...}}}})",
                lid,
            )
        return handler(self, lid)

    def get_att(self, lid: str, attr: str, path: Path) -> object:
        binding = self.bindings.get(f"{lid}.{attr}")
        if binding is not None and binding.value is not None:
            return binding.value
        kind = self._known(lid, path)
        handler = _ATTS.get((kind, attr))
        if handler is None:
            raise TemplateProblem(
                path,
                f"!GetAtt {lid}.{attr} ({kind}) has no local value: bind it in eventrun.yaml "
                f"(bindings: {{{lid}.{attr}: {{value: ...}}}})",
            )
        return handler(self, lid)

    def _known(self, lid: str, path: Path) -> str:
        if lid in _IMPLICIT:
            return _IMPLICIT[lid]
        if lid not in self.resources:
            raise TemplateProblem(path, "must name a parameter or a resource of the template", lid)
        return self.type_of(lid)


def _attr(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_IMPLICIT = {
    "ServerlessRestApi": "AWS::Serverless::Api",
    "ServerlessHttpApi": "AWS::Serverless::HttpApi",
}

Handler = Callable[[References, str], object]

_REFS: dict[str, Handler] = {
    "AWS::SQS::Queue": lambda r, lid: r.queue(lid).url,
    "AWS::Serverless::Function": lambda r, lid: r.function_name(lid),
    "AWS::Lambda::Function": lambda r, lid: r.function_name(lid),
    "AWS::S3::Bucket": lambda r, lid: r.bucket_name(lid),
    "AWS::SNS::Topic": lambda r, lid: r._arn("sns", r._named(lid, "TopicName")),
    "AWS::Serverless::SimpleTable": lambda r, lid: r._named(lid, "TableName"),
    "AWS::DynamoDB::Table": lambda r, lid: r._named(lid, "TableName"),
    "AWS::Kinesis::Stream": lambda r, lid: r._named(lid, "Name"),
    "AWS::Serverless::LayerVersion": lambda r, lid: r.layer_arn(lid),
    "AWS::Lambda::LayerVersion": lambda r, lid: r.layer_arn(lid),
    "AWS::Serverless::Api": lambda r, lid: "eventrun",
    "AWS::Serverless::HttpApi": lambda r, lid: "eventrun",
    "AWS::Events::EventBus": lambda r, lid: r._named(lid, "Name"),
}

_ATTS: dict[tuple[str, str], Handler] = {
    ("AWS::SQS::Queue", "Arn"): lambda r, lid: r.queue(lid).arn,
    ("AWS::SQS::Queue", "QueueName"): lambda r, lid: r.queue(lid).name,
    ("AWS::SQS::Queue", "QueueUrl"): lambda r, lid: r.queue(lid).url,
    ("AWS::Serverless::Function", "Arn"): lambda r, lid: r._arn(
        "lambda", f"function:{r.function_name(lid)}"
    ),
    ("AWS::Lambda::Function", "Arn"): lambda r, lid: r._arn(
        "lambda", f"function:{r.function_name(lid)}"
    ),
    ("AWS::S3::Bucket", "Arn"): lambda r, lid: f"arn:aws:s3:::{r.bucket_name(lid)}",
    ("AWS::SNS::Topic", "TopicName"): lambda r, lid: r._named(lid, "TopicName"),
    ("AWS::SNS::Topic", "TopicArn"): lambda r, lid: r._arn("sns", r._named(lid, "TopicName")),
    ("AWS::Serverless::SimpleTable", "Arn"): lambda r, lid: r._arn(
        "dynamodb", f"table/{r._named(lid, 'TableName')}"
    ),
    ("AWS::DynamoDB::Table", "Arn"): lambda r, lid: r._arn(
        "dynamodb", f"table/{r._named(lid, 'TableName')}"
    ),
    ("AWS::DynamoDB::Table", "StreamArn"): lambda r, lid: r._arn(
        "dynamodb", f"table/{r._named(lid, 'TableName')}/stream/eventrun"
    ),
    ("AWS::Serverless::SimpleTable", "StreamArn"): lambda r, lid: r._arn(
        "dynamodb", f"table/{r._named(lid, 'TableName')}/stream/eventrun"
    ),
    ("AWS::Kinesis::Stream", "Arn"): lambda r, lid: r._arn(
        "kinesis", f"stream/{r._named(lid, 'Name')}"
    ),
}
