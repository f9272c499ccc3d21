"""``bindings``: what the resources of a SAM template are on this machine.

Used with ``eventrun run -t template.yaml -c eventrun.yaml``: each key is a template
logical ID (``OrdersQueue``) or an ARN (an MSK cluster's, an ``!ImportValue`` name), each
value says what it is here: a queue on an SQS connection, a Kafka connection (and topic),
a RabbitMQ connection (an Amazon MQ broker, with the RabbitMQ plugin), a local directory
(an S3 bucket), or a plain value (what ``!Ref`` / ``!ImportValue`` of it
gives). Without -t the section is accepted and unused.
"""

from __future__ import annotations

from pydantic import Field, JsonValue, model_validator

from ._types import ConfigModel, Verbatim, problem

__all__ = ["Binding"]

_KINDS = ("sqs", "kafka", "rabbitmq", "directory", "value")


class Binding(ConfigModel):
    """One template resource bound to something local: one of sqs, kafka, rabbitmq,
    directory, value.

    ``queue`` goes with ``sqs``, ``topic`` with ``kafka``."""

    sqs: str | None = Field(None, description="connections.sqs name the queue lives on.")
    queue: str | None = Field(
        None, description="With sqs: the queue's name or URL there; unset: the template's name."
    )
    kafka: str | None = Field(None, description="connections.kafka name (an MSK cluster).")
    topic: str | None = Field(None, description="With kafka: a topic that replaces the event's.")
    rabbitmq: str | None = Field(
        None,
        description="connections.rabbitmq name (an Amazon MQ for RabbitMQ broker; needs the "
        "eventrun-rabbitmq plugin).",
    )
    directory: str | None = Field(
        None, description="A directory (an S3 bucket), relative to the template."
    )
    value: JsonValue = Field(None, description="What !Ref / !ImportValue of it gives.")

    @model_validator(mode="after")
    def _one_kind(self) -> Binding:
        kinds = [k for k in _KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = " and ".join(kinds) if kinds else "nothing"
            raise problem("must set exactly one of " + ", ".join(_KINDS), got=Verbatim(got))
        if self.queue is not None and self.sqs is None:
            raise problem("only allowed with sqs", at="queue", got=self.queue)
        if self.topic is not None and self.kafka is None:
            raise problem("only allowed with kafka", at="topic", got=self.topic)
        return self

    @property
    def kind(self) -> str:
        """sqs, kafka, rabbitmq, directory or value."""
        return next(k for k in _KINDS if getattr(self, k) is not None)
