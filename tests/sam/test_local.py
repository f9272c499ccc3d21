"""Before the daemon starts: the template's queues are created on a local endpoint (a
binding's connection or AWS_ENDPOINT_URL_SQS) with their properties, dead-letter queues
first, once; never against real AWS by default; bucket directories are made."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from eventrun.sam import load_sam, prepare_local
from tests.fixtures.moto import MotoServer
from tests.sam.test_translate import D, fn, write

pytestmark = pytest.mark.sqs

RESOURCES = D(
    """
    Dead: {Type: AWS::SQS::Queue, Properties: {MessageRetentionPeriod: 1209600}}
    Main:
      Type: AWS::SQS::Queue
      Properties:
        FifoQueue: true
        ContentBasedDeduplication: true
        VisibilityTimeout: 45
        RedrivePolicy: {deadLetterTargetArn: !GetAtt DeadFifo.Arn, maxReceiveCount: 2}
    DeadFifo: {Type: AWS::SQS::Queue, Properties: {FifoQueue: true}}
    Elsewhere: {Type: AWS::SQS::Queue}
    Uploads: {Type: AWS::S3::Bucket}
    """
)


def test_queues_are_created_on_their_endpoint_once(tmp_path: Path, moto: MotoServer) -> None:
    stack = f"l{uuid.uuid4().hex[:8]}"
    config = tmp_path / "eventrun.yaml"
    config.write_text(
        f"connections: {{sqs: {{local: {{endpoint_url: '{moto.endpoint_url}'}}}}}}\n"
        "bindings: {Dead: {sqs: local}, Main: {sqs: local}, DeadFifo: {sqs: local}}\n"
    )
    body = "Resources:\n" + "\n".join(
        "  " + line
        for line in (
            RESOURCES
            + fn(
                events="U: {Type: S3, Properties: {Bucket: !Ref Uploads, "
                "Events: 's3:ObjectCreated:*'}}"
            )
        ).splitlines()
    )
    template = write(tmp_path, body)
    app = load_sam(template, config=config, stack_name=stack, environ={"AWS_REGION": "us-east-1"})
    with capture_logs() as logs:
        anyio.run(prepare_local, app, {})
    created = [e["queue"] for e in logs if e["event"] == "sam.queue_created"]
    assert created == [f"{stack}-Dead", f"{stack}-DeadFifo.fifo", f"{stack}-Main.fifo"]
    assert [e["queue"] for e in logs if e["event"] == "sam.queue_expected"] == [
        f"{stack}-Elsewhere"  # unbound and no endpoint override: real AWS, never created
    ]
    assert (tmp_path / "buckets" / "Uploads").is_dir()
    sqs = moto.boto3_client()
    url = sqs.get_queue_url(QueueName=f"{stack}-Main.fifo")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true"
    assert attrs["ContentBasedDeduplication"] == "true"
    assert attrs["VisibilityTimeout"] == "45"
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(
        f":{stack}-DeadFifo.fifo"
    )
    with capture_logs() as logs:
        anyio.run(prepare_local, app, {})
    assert not [e for e in logs if e["event"] == "sam.queue_created"]
    assert len([e for e in logs if e["event"] == "sam.queue_exists"]) == 3
