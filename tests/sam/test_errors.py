"""Every error names the template, the property path (with its line) and what is
expected; unsupported events and runtimes name the issue that brings them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eventrun.config import TRIGGER_KINDS
from eventrun.exceptions import ConfigError
from eventrun.sam import load_sam
from eventrun.sam._events import MAPPERS, NOT_YET
from eventrun.sam._functions import RUNTIMES_NOT_YET
from tests.sam.test_translate import ENV, D, fn, translate


def error(tmp_path: Path, resources: str, extra: str = "", **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        translate(tmp_path, resources, extra, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == info.value.problems[0]
    return info.value.problems


STREAMS_YET = "kinesis" in TRIGGER_KINDS
UNSUPPORTED = [
    (
        "Kinesis",
        "S: {Type: Kinesis, Properties: {Stream: arn:aws:kinesis:eu-west-1:1:stream/s}}",
        "Resources.Fn.Properties.Events.S.Type (line 10): event Fn.S: not supported yet by "
        "this eventrun: Kinesis (issue #25)",
    ),
    (
        "DynamoDB",
        "S: {Type: DynamoDB, Properties: {Stream: x}}",
        "event Fn.S: not supported yet by this eventrun: DynamoDB (issue #25)",
    ),
    (
        "SNS",
        "S: {Type: SNS, Properties: {Topic: x}}",
        "event Fn.S: not supported by eventrun: SNS (eventrun has no SNS topic source)",
    ),
    (
        "EventBridgeRule",
        "S: {Type: EventBridgeRule, Properties: {Pattern: {source: [x]}}}",
        "event Fn.S: not supported by eventrun: EventBridgeRule (eventrun has no EventBridge bus",
    ),
]


UNSUPPORTED = [u for u in UNSUPPORTED if not (STREAMS_YET and u[0] in ("Kinesis", "DynamoDB"))]


@pytest.mark.parametrize(("kind", "event", "message"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_events(tmp_path: Path, kind: str, event: str, message: str) -> None:
    app = translate(tmp_path, fn(events=event))
    (line,) = app.unsupported
    assert line.startswith("template.yaml: ")
    assert message in line
    assert "triggers" not in app.document["functions"]["Fn"]
    with pytest.raises(ConfigError) as info:
        translate(tmp_path, fn(events=event), skip_unsupported=False)
    assert info.value.problems == [
        line,
        "template.yaml: run with --skip-unsupported to start without them",
    ]


def test_not_yet_types_are_one_entry_away() -> None:
    """The event types of other open issues are named and not mapped; a runtime family
    likewise (when their config keys land, they are mapped: see the stream test)."""
    assert set(NOT_YET) <= {"Kinesis", "DynamoDB", "MQ"}
    assert not set(NOT_YET) & set(MAPPERS)
    assert RUNTIMES_NOT_YET == {}  # issue 24 brought nodejs* and provided*


@pytest.mark.parametrize("runtime", ["nodejs20.x", "provided.al2023"])
def test_runtime_api_runtimes_pass_through(tmp_path: Path, runtime: str) -> None:
    """Issue 24's runtimes run through the Runtime API: the template's Runtime is kept."""
    app = translate(tmp_path, fn().replace("python3.11", runtime) + fn(name="Py"))
    assert app.unsupported == []
    assert app.document["functions"]["Fn"]["runtime"] == runtime


@pytest.mark.parametrize(
    ("runtime", "message"),
    [("java21", "function Fn: not supported by eventrun: Runtime java21")],
)
def test_unsupported_runtimes(tmp_path: Path, runtime: str, message: str) -> None:
    app = translate(tmp_path, fn().replace("python3.11", runtime) + fn(name="Py"))
    (line,) = app.unsupported
    assert line.startswith("template.yaml: Resources.Fn.Properties.Runtime (line 8): ")
    assert message in line
    assert list(app.document["functions"]) == ["Py"]


ERRORS = [
    (
        "CodeUri on S3",
        fn().replace("CodeUri: src/", "CodeUri: s3://bucket/code.zip"),
        "template.yaml: Resources.Fn.Properties.CodeUri (line 6): must be a local directory "
        "relative to the template (an S3 location or a zip file cannot be run locally), "
        'got "s3://bucket/code.zip"',
    ),
    (
        "missing code directory",
        fn().replace("CodeUri: src/", "CodeUri: nowhere/"),
        "template.yaml: Resources.Fn.Properties.CodeUri (line 6): must be a directory (",
    ),
    (
        "ImportValue without a binding",
        fn(props="Environment: {Variables: {T: !ImportValue other-stack-table}}"),
        "template.yaml: Resources.Fn.Properties.Environment.Variables.T.Fn::ImportValue "
        "(line 9): cannot be resolved off AWS: give its value in eventrun.yaml (bindings: "
        '{"other-stack-table": {value: ...}}) and pass it with -c, got "other-stack-table"',
    ),
    (
        "GetAtt of an attribute with no local value",
        "Q: {Type: AWS::SQS::Queue}\n" + fn(props="Environment: {Variables: {T: !GetAtt Q.Bogus}}"),
        "!GetAtt Q.Bogus (AWS::SQS::Queue) has no local value: bind it in eventrun.yaml "
        "(bindings: {Q.Bogus: {value: ...}})",
    ),
    (
        "Ref of an unknown name",
        fn(props="Environment: {Variables: {T: !Ref Nope}}"),
        "template.yaml: Resources.Fn.Properties.Environment.Variables.T.Ref (line 9): must "
        'name a parameter or a resource of the template, got "Nope"',
    ),
    (
        "SQS event on a non-ARN",
        fn(events="Q: {Type: SQS, Properties: {Queue: my-queue}}"),
        "template.yaml: Resources.Fn.Properties.Events.Q.Properties.Queue (line 10): must be a "
        'queue ARN (!GetAtt Queue.Arn), got "my-queue"',
    ),
    (
        "MQ without a binding",
        fn(events="M: {Type: MQ, Properties: {Broker: arn:aws:mq:x, Queues: [q]}}"),
        "Resources.Fn.Properties.Events.M.Properties.Broker (line 10): is an Amazon MQ broker: "
        "bind it to a RabbitMQ connection",
    ),
    (
        "MSK without a binding",
        fn(events="M: {Type: MSK, Properties: {Stream: arn:aws:kafka:x, Topics: [t]}}"),
        "Resources.Fn.Properties.Events.M.Properties.Stream (line 10): is an MSK cluster: bind "
        "it to a Kafka connection in eventrun.yaml",
    ),
    (
        "S3 event on a bucket of another stack",
        fn(events='U: {Type: S3, Properties: {Bucket: other, Events: "s3:ObjectCreated:*"}}'),
        "Resources.Fn.Properties.Events.U.Properties.Bucket (line 10): must be !Ref of an "
        'AWS::S3::Bucket of this template, got "other"',
    ),
    (
        "an SNS destination",
        fn(
            props="""
            EventInvokeConfig:
              DestinationConfig:
                OnFailure: {Type: SNS, Destination: "arn:aws:sns:eu-west-1:1:t"}
            """
        ),
        "Resources.Fn.Properties.EventInvokeConfig.DestinationConfig.OnFailure.Destination "
        "(line 11): must be an SQS queue or a Lambda function here (a SNS destination has no "
        'local counterpart), got "arn:aws:sns:eu-west-1:1:t"',
    ),
    (
        "bad Schedule Input",
        fn(events="S: {Type: Schedule, Properties: {Schedule: rate(1 hour), Input: '{nope'}}"),
        "Resources.Fn.Properties.Events.S.Properties.Input (line 10): must be a JSON text",
    ),
]


@pytest.mark.parametrize(("what", "resources", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_error_names_file_path_line_and_expectation(
    tmp_path: Path, what: str, resources: str, message: str
) -> None:
    problems = error(tmp_path, resources)
    assert any(message in p for p in problems), problems


def test_parameter_errors(tmp_path: Path) -> None:
    params = D(
        """
        Parameters:
          Stage: {Type: String, AllowedValues: [dev, prod], Default: dev}
          Secret: {Type: String}
        """
    )
    problems = error(tmp_path, fn(), params)
    assert problems == [
        "template.yaml: Parameters.Secret (line 4): has no Default: give it with "
        "--parameter-overrides Secret=VALUE"
    ]
    problems = error(tmp_path, fn(), params, overrides={"Secret": "s", "Stage": "qa"})
    assert problems == [
        'template.yaml: Parameters.Stage (line 3): must be one of dev, prod, got "qa"'
    ]
    problems = error(tmp_path, fn(), params, overrides={"Secret": "s", "Stag": "dev"})
    assert problems == [
        "template.yaml: --parameter-overrides names no parameter of the template "
        '(Stage, Secret), got "Stag"'
    ]


def test_translated_value_out_of_range_names_the_function(tmp_path: Path) -> None:
    problems = error(tmp_path, fn(props="Timeout: 5000"))
    assert problems == [
        "template.yaml (translated): functions.Fn.timeout: must be 1s..15m, got 5000.0"
    ]


def test_every_problem_is_reported(tmp_path: Path) -> None:
    problems = error(
        tmp_path,
        fn(props="Environment: {Variables: {T: !Ref Nope}}")
        + fn(name="Two", props="Environment: {Variables: {T: !Ref Nope2}}"),
    )
    assert len(problems) == 2


def test_syntax_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text("Resources:\n  A: [\n")
    with pytest.raises(ConfigError, match=r"^template.yaml: line 3 column 1: invalid YAML"):
        load_sam(tmp_path / "template.yaml", environ=ENV)
    with pytest.raises(ConfigError, match=r"^nope.yaml: template not found"):
        load_sam(tmp_path / "nope.yaml", environ=ENV)
    (tmp_path / "template.yaml").write_text("Resources:\n  A: {Type: X}\n  A: {Type: Y}\n")
    with pytest.raises(ConfigError, match=r"line 3 column 3: invalid YAML: duplicate key 'A'"):
        load_sam(tmp_path / "template.yaml", environ=ENV)


def test_stream_mappers_are_ready_for_issue_25(tmp_path: Path) -> None:
    """Kinesis and DynamoDB events map to the SPEC §12 stream triggers; registered as soon
    as the trigger kinds exist (until then the events are "not supported yet")."""
    from eventrun.sam._events import EventContext, _dynamodb, _kinesis

    app = translate(
        tmp_path,
        D(
            """
            S: {Type: AWS::Kinesis::Stream, Properties: {Name: clicks}}
            T: {Type: AWS::DynamoDB::Table, Properties: {TableName: orders}}
            """
        )
        + fn(),
    )
    tpl = app.template
    props = {
        "Stream": {"Fn::GetAtt": ["S", "Arn"]},
        "StartingPosition": "LATEST",
        "BatchSize": 500,
        "ParallelizationFactor": 4,
        "BisectBatchOnFunctionError": True,
        "MaximumRetryAttempts": 3,
        "MaximumRecordAgeInSeconds": 3600,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    assert _kinesis(EventContext(tpl, "Fn", "E", props, ["x"])) == {
        "kinesis": {
            "stream": "clicks",
            "starting_position": "LATEST",
            "batch_size": 500,
            "report_batch_item_failures": True,
            "parallelization_factor": 4,
            "bisect_batch_on_function_error": True,
            "maximum_retry_attempts": 3,
            "maximum_record_age": 3600.0,
        }
    }
    ddb = {"Stream": {"Fn::GetAtt": ["T", "StreamArn"]}, "StartingPosition": "TRIM_HORIZON"}
    assert _dynamodb(EventContext(tpl, "Fn", "E", ddb, ["x"])) == {
        "dynamodb_streams": {"table": "orders", "starting_position": "TRIM_HORIZON"}
    }
    assert ("Kinesis" in MAPPERS) == ("kinesis" in TRIGGER_KINDS)
    assert ("DynamoDB" in MAPPERS) == ("dynamodb_streams" in TRIGGER_KINDS)


# -- malformed templates: always a ConfigError naming the template, never a crash ------

MALFORMED: dict[str, str] = yaml.safe_load(
    (Path(__file__).with_name("malformed.yaml")).read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_template_is_a_config_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def handler(e, c):\n    pass\n")
    (tmp_path / "template.yaml").write_text(MALFORMED[name])
    with pytest.raises(ConfigError) as info:
        load_sam(tmp_path / "template.yaml", environ={})
    assert all(p.startswith("template.yaml: ") for p in info.value.problems), info.value.problems
