"""Config models of the AWS stream triggers: ``kinesis`` and ``dynamodb_streams``.

Keys and ranges are Lambda's event-source-mapping ones for Kinesis and DynamoDB Streams
(``reference/lambda-semantics.md`` §1.1, §1.4): batch_size 1..10000 (default 100),
maximum_batching_window 0..300 s (default 0), parallelization_factor 1..10 (by partition
key), the stream error controls of :class:`BatchControls`. Two keys are eventrun's own:
``poll_interval`` (Lambda's pace: once a second per Kinesis shard, four times a second per
DynamoDB shard) and ``shard_lease`` (how long a daemon's claim on a shard lasts in the
store without renewal, so replicas sharing a Redis store split the shards and take over
those of a dead one).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ._triggers import BatchControls, Timestamp, Window
from ._types import NO_VALUE, Duration, Range, Verbatim, problem

__all__ = ["DynamoDBStreamsTrigger", "KinesisTrigger"]

_DDB_STREAM_ARN = re.compile(r"arn:aws[\w-]*:dynamodb:[^:]*:[^:]*:table/[^/]+/stream/.+")
Lease = Annotated[Duration, Range(1, 300, duration=True)]
PollInterval = Annotated[Duration, Range(0.05, 60, duration=True)]


class _AwsStreamTrigger(BatchControls):
    """What the two AWS stream triggers share."""

    @model_validator(mode="after")
    def _window_alone(self) -> _AwsStreamTrigger:
        if self.tumbling_window > 0 and self.parallelization_factor != 1:
            raise problem(
                "must be 1 with a tumbling_window",
                at="parallelization_factor",
                got=self.parallelization_factor,
            )
        return self

    maximum_batching_window: Window = Field(
        0.0, description="Longest wait to fill a batch after its first record."
    )
    tumbling_window: Annotated[Duration, Range(0, 900, duration=True)] = Field(
        0.0,
        description="Lambda's TumblingWindowInSeconds: group records into windows of this "
        "length by arrival time; the handler gets window, state (what it returned last in "
        'the window, as {"state": ...}) and isFinalInvokeForWindow; a state over 1 MB ends '
        "the window early (isWindowTerminatedEarly). 0: no windows. Needs "
        "parallelization_factor 1.",
    )
    shard_lease: Lease = Field(
        10.0,
        description="eventrun: how long this daemon's claim on a shard lasts in the store "
        "without renewal; replicas sharing a Redis store split the shards, and a dead "
        "replica's shards are taken over within twice this; a daemon that stops cleanly "
        "hands its shards over at once.",
    )


def _check_timestamp(position: str, ts: float | None) -> None:
    if position == "AT_TIMESTAMP" and ts is None:
        raise problem(
            "required when starting_position is AT_TIMESTAMP",
            at="starting_position_timestamp",
            got=NO_VALUE,
        )
    if position != "AT_TIMESTAMP" and ts is not None:
        raise problem(
            "only allowed when starting_position is AT_TIMESTAMP",
            at="starting_position_timestamp",
            got=ts,
        )
    if ts is not None and ts > time.time() + 60:
        when = datetime.fromtimestamp(ts, UTC).isoformat()
        raise problem("must not be in the future", at="starting_position_timestamp", got=when)


class KinesisTrigger(_AwsStreamTrigger):
    """Read a Kinesis data stream, shard by shard (GetRecords), like Lambda's mapping."""

    stream: str = Field(min_length=1, description="Stream name or ARN.")
    connection: str | None = Field(
        None, description="connections.kinesis name; unset: the standard AWS environment."
    )
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = Field(
        "TRIM_HORIZON", description="Where a shard without a checkpoint starts."
    )
    starting_position_timestamp: Timestamp | None = Field(
        None, description="Epoch seconds or ISO 8601; required with AT_TIMESTAMP."
    )
    poll_interval: PollInterval = Field(
        1.0,
        description="eventrun: GetRecords calls per shard are this far apart while the "
        "shard is caught up (Lambda: 1s); a shard that is behind is read again at once.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KinesisTrigger:
        _check_timestamp(self.starting_position, self.starting_position_timestamp)
        return self


class DynamoDBStreamsTrigger(_AwsStreamTrigger):
    """Read a DynamoDB table's stream, shard by shard, like Lambda's mapping."""

    table: str | None = Field(
        None, description="Table name: its latest stream is read (this or stream)."
    )
    stream: str | None = Field(None, description="Stream ARN (this or table).")
    connection: str | None = Field(
        None, description="connections.dynamodb name; unset: the standard AWS environment."
    )
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = Field(
        "TRIM_HORIZON", description="Where a shard without a checkpoint starts."
    )
    poll_interval: PollInterval = Field(
        0.25,
        description="eventrun: GetRecords calls per shard are this far apart while the "
        "shard is caught up (Lambda: 4 a second).",
    )

    @model_validator(mode="after")
    def _source(self) -> DynamoDBStreamsTrigger:
        if (self.table is None) == (self.stream is None):
            got = "both" if self.table is not None else "neither"
            raise problem("must set exactly one of table, stream", got=Verbatim(got))
        if self.stream is not None and not _DDB_STREAM_ARN.fullmatch(self.stream):
            raise problem(
                "must be a DynamoDB stream ARN "
                "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL)",
                at="stream",
                got=self.stream,
            )
        return self
