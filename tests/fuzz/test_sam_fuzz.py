"""Structurally random SAM templates: random trees over SAM's and CloudFormation's own
vocabulary (properties, event types, intrinsic functions) in a function, a queue and the
template's sections. Every template translates or raises ConfigError whose problems are
single lines naming the template; nothing else escapes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrun.exceptions import ConfigError
from eventrun.sam import load_sam
from tests._hypothesis import examples

WORDS = [
    "Handler", "Runtime", "CodeUri", "Timeout", "MemorySize", "Environment", "Variables",
    "Events", "Type", "Properties", "Queue", "BatchSize", "Schedule", "ScheduleExpression",
    "Input", "Path", "Method", "Bucket", "Filter", "S3Key", "Rules", "Name", "Value",
    "EventInvokeConfig", "DestinationConfig", "OnFailure", "OnSuccess", "Destination",
    "DeadLetterQueue", "TargetArn", "Layers", "ReservedConcurrentExecutions",
    "FunctionResponseTypes", "ScalingConfig", "MaximumConcurrency", "FilterCriteria", "Filters",
    "Pattern", "KafkaBootstrapServers", "Topics", "Stream", "InlineCode", "IgnoreGlobals",
    "PayloadFormatVersion", "QueueName", "FifoQueue", "RedrivePolicy", "deadLetterTargetArn",
    "maxReceiveCount", "VisibilityTimeout", "Enabled", "State", "Function", "Default",
    "AllowedValues",
]  # fmt: skip
FUNCTIONS = [
    "Ref", "Fn::GetAtt", "Fn::Sub", "Fn::Join", "Fn::If", "Fn::Select", "Fn::Split",
    "Fn::FindInMap", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition",
    "Fn::ImportValue", "Fn::Base64", "Fn::GetAZs", "Fn::Cidr", "Fn::ToJsonString", "Fn::Length",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "", "SQS", "Schedule", "ScheduleV2", "Api", "HttpApi", "S3", "SelfManagedKafka",
            "MSK", "Kinesis", "SNS", "python3.11", "nodejs20.x", "src/", "s3://b/k.zip",
            "app.handler", "Q", "Q.Arn", "B", "Fn", "Fn.Arn", "P", "C", "rate(1 hour)",
            "cron(0 12 * * ? *)", "/p/{id}", "/{proxy+}", "get", "any", "s3:ObjectCreated:*",
            "${Q}", "${Q.Arn}", "${AWS::Region}", "${!x}", "${", "AWS::NoValue",
            "AWS::StackName", '{"a": 1}', "arn:aws:sqs:us-east-1:123456789012:x",
            "ReportBatchItemFailures", "127.0.0.1:9092",
        ]
    ),
    st.text(max_size=8),
)  # fmt: skip
KEYS = st.one_of(st.sampled_from(WORDS), st.text(max_size=5))


def _intrinsic(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(lambda k, v: {k: v}, st.sampled_from(FUNCTIONS), inner)


TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=4),
        _intrinsic(inner),
    ),
    max_leaves=20,
)
BASE = {"Handler": "app.handler", "Runtime": "python3.11", "CodeUri": "src/"}


@st.composite
def templates(draw: st.DrawFn) -> dict[str, Any]:
    fn_props = {**BASE, **draw(st.dictionaries(st.sampled_from(WORDS), TREES, max_size=4))}
    doc: dict[str, Any] = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Resources": {
            "Q": {"Type": "AWS::SQS::Queue", "Properties": draw(TREES)},
            "B": {"Type": "AWS::S3::Bucket"},
            "Fn": {"Type": "AWS::Serverless::Function", "Properties": fn_props},
        },
    }
    for section in ("Globals", "Parameters", "Conditions", "Mappings"):
        if draw(st.booleans()):
            doc[section] = draw(TREES)
    return doc


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(templates())
def test_random_templates_translate_or_raise_config_error(doc: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "src" / "app.py").write_text("def handler(e, c):\n    return e\n")
        (root / "template.yaml").write_text(json.dumps(doc))
        problems: list[str] = []
        try:
            load_sam(root / "template.yaml", environ={})
        except ConfigError as exc:
            problems = exc.problems or ["a ConfigError without problems"]
        for line in problems:
            assert line.startswith("template.yaml"), line
            assert len(line.splitlines()) == 1, line
