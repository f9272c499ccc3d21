"""The events a SAM app's handlers get, through ``eventrun run -t``, validate against
aws-lambda-powertools' parser models: SQS, EventBridge (a Schedule without Input), API
Gateway REST (Api) and HTTP API (HttpApi) events, S3 (a bucket directory)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    EventBridgeModel,
    S3Model,
    SqsModel,
)

from tests._daemon import Daemon
from tests.fixtures.moto import MotoServer

pytestmark = pytest.mark.sqs

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Out: {Type: String}
Globals:
  Function:
    Runtime: python3.12
    CodeUri: src/
    Handler: app.handler
    Environment: {Variables: {OUT: !Ref Out}}
Resources:
  Queue: {Type: AWS::SQS::Queue}
  Bucket: {Type: AWS::S3::Bucket}
  Capture:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Sqs: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(1 second)}}
        Rest: {Type: Api, Properties: {Path: "/rest/{id}", Method: get}}
        Http: {Type: HttpApi, Properties: {Path: "/http/{proxy+}", Method: post}}
        Upload: {Type: S3, Properties: {Bucket: !Ref Bucket, Events: "s3:ObjectCreated:*"}}
"""

HANDLER = """
import json
import os
import uuid


def handler(event, context):
    name = os.path.join(os.environ["OUT"], uuid.uuid4().hex + ".json")
    with open(name, "w") as f:
        json.dump(event, f)
    return {"statusCode": 200, "body": "ok"}
"""


def _kind(event: dict[str, Any]) -> str:
    if "Records" in event:
        return str(event["Records"][0].get("eventSource"))
    if event.get("detail-type") == "Scheduled Event":
        return "schedule"
    return "http2" if event.get("version") == "2.0" else "rest"


def test_events_validate_against_powertools_models(tmp_path: Path, moto: MotoServer) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(HANDLER)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    stack = f"e{uuid.uuid4().hex[:8]}"
    daemon = Daemon(
        tmp_path / "template.yaml",
        env={"AWS_ENDPOINT_URL_SQS": moto.endpoint_url},
        args=["--parameter-overrides", f"Out={out}", "--stack-name", stack],
    )
    sqs = moto.boto3_client()
    try:
        daemon.start()
        url = sqs.get_queue_url(QueueName=f"{stack}-Queue")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"a": 1}')
        (tmp_path / "buckets" / "Bucket" / "in.txt").write_text("x")
        with httpx.Client(base_url=daemon.url, timeout=30) as http:
            assert http.get("/rest/7?q=1").status_code == 200
            assert http.post("/http/a/b", json={"b": 2}).status_code == 200
        wanted = {"aws:sqs", "schedule", "rest", "http2", "aws:s3"}
        events: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 60
        while not wanted <= set(events) and time.monotonic() < deadline:
            for path in out.glob("*.json"):
                try:
                    event = json.loads(path.read_text())
                except ValueError:  # being written
                    continue
                events.setdefault(_kind(event), event)
            time.sleep(0.1)
        assert wanted <= set(events), sorted(events)
    finally:
        daemon.stop()
    SqsModel.model_validate(events["aws:sqs"])
    assert events["aws:sqs"]["Records"][0]["eventSourceARN"].endswith(f":{stack}-Queue")
    EventBridgeModel.model_validate(events["schedule"])
    rest = APIGatewayProxyEventModel.model_validate(events["rest"])
    assert rest.pathParameters == {"id": "7"}
    assert rest.requestContext.stage == "Prod"
    http2 = APIGatewayProxyEventV2Model.model_validate(events["http2"])
    assert http2.pathParameters == {"proxy": "a/b"}
    s3 = S3Model.model_validate(events["aws:s3"])
    assert s3.Records[0].s3.bucket.name == "Bucket"
    assert s3.Records[0].s3.object.key == "in.txt"
