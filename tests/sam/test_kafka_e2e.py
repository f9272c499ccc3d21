"""SelfManagedKafka and MSK events of a SAM template, end to end on a real Kafka-protocol
broker (Tansu): bootstrap servers from a parameter, an MSK cluster ARN bound to a
connection by the eventrun file given with -c, a filter dropping non-matching records."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from tests._daemon import Daemon
from tests.fixtures.kafka import KafkaBroker, create_topic, produce

pytestmark = pytest.mark.kafka

CLUSTER = "arn:aws:kafka:us-east-1:123456789012:cluster/orders/abc-1"

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Brokers: {Type: String}
  Topic: {Type: String}
  MskTopic: {Type: String}
  Out: {Type: String}
Globals:
  Function: {Runtime: python3.12, CodeUri: src/, Environment: {Variables: {OUT: !Ref Out}}}
Resources:
  Consume:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Events:
        Stream:
          Type: SelfManagedKafka
          Properties:
            KafkaBootstrapServers: [!Ref Brokers]
            Topics: [!Ref Topic]
            StartingPosition: TRIM_HORIZON
            BatchSize: 10
            FilterCriteria:
              Filters: [{Pattern: '{"value": {"kind": ["order"]}}'}]
        Cluster:
          Type: MSK
          Properties:
            Stream: "CLUSTER"
            Topics: [!Ref MskTopic]
            StartingPosition: TRIM_HORIZON
""".replace("CLUSTER", CLUSTER)

HANDLER = """
import base64
import json
import os


def handler(event, context):
    with open(os.environ["OUT"] + ".events", "a") as f:
        f.write(json.dumps(event) + "\\n")
    with open(os.environ["OUT"], "a") as f:
        for records in event["records"].values():
            for r in records:
                value = json.loads(base64.b64decode(r["value"]))
                line = {"source": event["eventSource"], "topic": r["topic"], "value": value}
                if "eventSourceArn" in event:
                    line["arn"] = event["eventSourceArn"]
                f.write(json.dumps(line) + "\\n")
"""


def test_kafka_events_of_a_template(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLER)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "eventrun.yaml").write_text(
        textwrap.dedent(
            f"""
            connections:
              kafka: {{main: {{bootstrap_servers: "{kafka_broker.bootstrap}"}}}}
            bindings:
              "{CLUSTER}": {{kafka: main}}
            """
        )
    )
    topic = anyio.run(create_topic, kafka_broker.bootstrap)
    msk_topic = anyio.run(create_topic, kafka_broker.bootstrap)
    out = tmp_path / "out.jsonl"
    overrides = f"Brokers={kafka_broker.bootstrap} Topic={topic} MskTopic={msk_topic} Out={out}"
    daemon = Daemon(
        tmp_path / "template.yaml",
        args=["-c", str(tmp_path / "eventrun.yaml"), "--parameter-overrides", overrides],
    )
    try:
        daemon.start()
        values = [{"kind": "order", "n": 1}, {"kind": "noise", "n": 2}, {"kind": "order", "n": 3}]
        messages = [(0, None, json.dumps(v).encode()) for v in values]
        anyio.run(produce, kafka_broker.bootstrap, topic, messages)
        anyio.run(produce, kafka_broker.bootstrap, msk_topic, [(0, None, b'{"n": 4}')])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            if len(lines) >= 3:
                break
            time.sleep(0.1)
        got = sorted((json.loads(line) for line in lines), key=lambda r: r["value"]["n"])
        from aws_lambda_powertools.utilities.parser.models import (
            KafkaMskEventModel,
            KafkaSelfManagedEventModel,
        )

        for line in (tmp_path / "out.jsonl.events").read_text().splitlines():
            event = json.loads(line)
            model = KafkaMskEventModel if "eventSourceArn" in event else KafkaSelfManagedEventModel
            model.model_validate(event)
        assert got == [
            {"source": "SelfManagedKafka", "topic": topic, "value": {"kind": "order", "n": 1}},
            {"source": "SelfManagedKafka", "topic": topic, "value": {"kind": "order", "n": 3}},
            {"source": "aws:kafka", "topic": msk_topic, "value": {"n": 4}, "arn": CLUSTER},
        ]
    finally:
        daemon.stop()
