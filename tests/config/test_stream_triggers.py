"""The ``kinesis`` and ``dynamodb_streams`` trigger models and their connections: defaults,
ranges, and one-line errors naming the key, the value and what is expected."""

from __future__ import annotations

import pytest

from eventrun.config import (
    DynamoDBConnection,
    DynamoDBStreamsTrigger,
    KinesisConnection,
    KinesisTrigger,
    parse_config,
)
from eventrun.exceptions import ConfigError

E = "eventrun.yaml: "


def _config(kind: str, body: str, connections: str = "") -> str:
    return (
        f"connections:\n{connections}" if connections else ""
    ) + f"functions:\n  f:\n    handler: app:h\n    triggers:\n      - {kind}: {{{body}}}\n"


def test_defaults_are_lambdas() -> None:
    cfg = parse_config(_config("kinesis", "stream: s"), filename="eventrun.yaml", environ={})
    spec = cfg.functions["f"].triggers[0].spec
    assert isinstance(spec, KinesisTrigger)
    assert (spec.batch_size, spec.maximum_batching_window, spec.parallelization_factor) == (
        100,
        0.0,
        1,
    )
    assert spec.starting_position == "TRIM_HORIZON"
    assert (spec.poll_interval, spec.shard_lease, spec.tumbling_window) == (1.0, 10.0, 0.0)
    text = _config("dynamodb_streams", "table: t")
    ddb = parse_config(text, filename="eventrun.yaml", environ={}).functions["f"]
    dspec = ddb.triggers[0].spec
    assert isinstance(dspec, DynamoDBStreamsTrigger)
    assert dspec.poll_interval == 0.25


def test_connections_are_the_aws_shape() -> None:
    text = _config(
        "kinesis",
        "stream: s, connection: k",
        "  kinesis: {k: {region: eu-west-1, endpoint_url: 'http://127.0.0.1:4566'}}\n"
        "  dynamodb: {d: {aws_access_key_id: a, aws_secret_access_key: b}}\n",
    )
    cfg = parse_config(text, filename="eventrun.yaml", environ={"AWS_DEFAULT_REGION": "us-west-2"})
    kinesis = cfg.connection_for("kinesis", "k")
    assert isinstance(kinesis, KinesisConnection)
    assert kinesis.client_kwargs() == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:4566",
    }
    ddb = cfg.connection_for("dynamodb_streams", "d")
    assert isinstance(ddb, DynamoDBConnection)
    assert ddb.client_kwargs()["region_name"] == "us-west-2"
    assert "b" not in repr(ddb)


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        (
            "kinesis",
            "stream: s, connection: nope",
            "functions.f.triggers[0].kinesis.connection: must name a connection in "
            "connections.kinesis (none defined), got 'nope'",
        ),
        (
            "kinesis",
            "stream: s, starting_position: AT_TIMESTAMP",
            "functions.f.triggers[0].kinesis.starting_position_timestamp: required when "
            "starting_position is AT_TIMESTAMP",
        ),
        (
            "kinesis",
            "stream: s, tumbling_window: 60s, parallelization_factor: 2",
            "functions.f.triggers[0].kinesis.parallelization_factor: must be 1 with a "
            "tumbling_window, got 2",
        ),
        (
            "kinesis",
            "stream: s, tumbling_window: 901",
            "functions.f.triggers[0].kinesis.tumbling_window: must be 0s..15m, got 901",
        ),
        (
            "dynamodb_streams",
            "table: t, stream: 'arn:aws:dynamodb:us-east-1:1:table/t/stream/x'",
            "functions.f.triggers[0].dynamodb_streams: must set exactly one of table, stream, "
            "got both",
        ),
        (
            "dynamodb_streams",
            "stream: 'arn:aws:kinesis:us-east-1:1:stream/s'",
            "functions.f.triggers[0].dynamodb_streams.stream: must be a DynamoDB stream ARN "
            "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL), "
            "got 'arn:aws:kinesis:us-east-1:1:stream/s'",
        ),
        (
            "dynamodb_streams",
            "table: t, starting_position: AT_TIMESTAMP",
            "functions.f.triggers[0].dynamodb_streams.starting_position: must be one of "
            "'TRIM_HORIZON' or 'LATEST', got 'AT_TIMESTAMP'",
        ),
    ],
)
def test_bad_values_are_one_clear_line(kind: str, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(kind, body), filename="eventrun.yaml", environ={})
    assert str(info.value) == E + message
