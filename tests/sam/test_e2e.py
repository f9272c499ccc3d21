"""examples/sam-app end to end: ``eventrun run -t template.yaml`` as a real daemon against
moto (SQS) and the local filesystem, with parameter overrides.

The template's queues are created on moto with their properties (the orders queue's
RedrivePolicy included), so a bad order that fails three receives lands in the
dead-letter queue by SQS's own redrive; a filtered SQS event drops the low-priority
message; the Api route gets a payload-1.0 event, the HttpApi catch-all a 2.0 one; the
schedule's Input is the event; a .csv dropped in buckets/UploadsBucket/ is an S3 event.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests._daemon import Daemon
from tests.fixtures.moto import MotoServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sam-app"

pytestmark = pytest.mark.sqs


def _wait(predicate, timeout_s: float = 60, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "sam-app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("buckets", "__pycache__", "*.db*"))
    return root


def test_sam_app_runs_unchanged(app_dir: Path, tmp_path: Path, moto: MotoServer) -> None:
    data = tmp_path / "data"
    stack = f"t{uuid.uuid4().hex[:8]}"
    overrides = f"ReportSchedule='rate(2 seconds)' DataDir={data}"
    daemon = Daemon(
        app_dir / "template.yaml",
        env={"AWS_ENDPOINT_URL_SQS": moto.endpoint_url},
        args=["--parameter-overrides", overrides, "--stack-name", stack, "--log-level", "info"],
    )
    sqs = moto.boto3_client()
    try:
        daemon.start()
        created = {e["queue"] for e in daemon.events("sam.queue_created")}
        assert f"{stack}-OrdersQueue" in created
        assert f"{stack}-OrdersDeadLetterQueue" in created
        orders_url = sqs.get_queue_url(QueueName=f"{stack}-OrdersQueue")["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=orders_url, AttributeNames=["All"])
        policy = json.loads(attrs["Attributes"]["RedrivePolicy"])
        assert policy["deadLetterTargetArn"].endswith(f":{stack}-OrdersDeadLetterQueue")
        assert attrs["Attributes"]["VisibilityTimeout"] == "30"

        # SQS with partial batch failures: good orders stored, the bad one fails alone
        for i in (1, 2, 3):
            sqs.send_message(QueueUrl=orders_url, MessageBody=json.dumps({"id": i, "quantity": i}))
        sqs.send_message(QueueUrl=orders_url, MessageBody=json.dumps({"id": 99, "quantity": 0}))
        _wait(lambda: all((data / f"order-{i}.json").exists() for i in (1, 2, 3)), what="orders")
        stored = json.loads((data / "order-2.json").read_text())
        assert stored == {"id": 2, "quantity": 2, "source": f"{stack}-OrdersQueue", "stage": "dev"}
        assert not (data / "order-99.json").exists()

        # a filtered SQS event: the low-priority message is dropped, never handled
        prio_url = sqs.get_queue_url(QueueName=f"{stack}-PriorityQueue")["QueueUrl"]
        body = {"id": 11, "quantity": 1, "priority": "low"}
        sqs.send_message(QueueUrl=prio_url, MessageBody=json.dumps(body))
        body = {"id": 10, "quantity": 1, "priority": "high"}
        sqs.send_message(QueueUrl=prio_url, MessageBody=json.dumps(body))
        _wait(lambda: (data / "order-10.json").exists(), what="the high-priority order")

        def prio_empty() -> bool:
            got = sqs.get_queue_attributes(
                QueueUrl=prio_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            return (
                got["ApproximateNumberOfMessages"]
                == got["ApproximateNumberOfMessagesNotVisible"]
                == "0"
            )

        _wait(prio_empty, what="the priority queue to be empty")
        assert not (data / "order-11.json").exists()

        # !Ref of a queue is its real URL: the handler's boto3 forwards a rush order there
        body = {"id": 12, "quantity": 1, "rush": True}
        sqs.send_message(QueueUrl=orders_url, MessageBody=json.dumps(body))
        _wait(lambda: (data / "order-12.json").exists(), what="the forwarded rush order")
        forwarded = json.loads((data / "order-12.json").read_text())
        assert forwarded["priority"] == "high"
        assert forwarded["source"] == f"{stack}-PriorityQueue"

        with httpx.Client(base_url=daemon.url, timeout=30) as http:
            # Api (REST, payload format 1.0) route with a path parameter
            r = http.get("/orders/2")
            assert r.status_code == 200, r.text
            assert r.json()["id"] == 2
            r = http.get("/orders/404")
            assert r.status_code == 404
            assert r.json() == {"message": "no order 404"}
            # HttpApi without a Path: the $default catch-all (payload 2.0)
            r = http.get("/some/where/else")
            assert r.status_code == 200
            assert r.text == "GET /some/where/else"

        # Schedule: Input is the event
        reports = data / "reports.jsonl"
        _wait(reports.exists, what="a scheduled report")
        first = json.loads(reports.read_text().splitlines()[0])
        assert first["event"] == {"report": "orders", "format": "summary"}

        # S3 -> buckets/UploadsBucket/, suffix .csv only
        bucket = app_dir / "buckets" / "UploadsBucket"
        (bucket / "notes.txt").write_text("ignored")
        (bucket / "prices.csv").write_text("a,b\n1,2\n")
        _wait(lambda: (data / "upload-prices.json").exists(), what="the upload")
        upload = json.loads((data / "upload-prices.json").read_text())
        assert upload == {
            "bucket": "UploadsBucket",
            "key": "prices.csv",
            "expected_bucket": "UploadsBucket",
        }
        assert not (data / "upload-notes.json").exists()

        # the bad order: three receives, then SQS's redrive moves it to the DLQ
        dlq_url = sqs.get_queue_url(QueueName=f"{stack}-OrdersDeadLetterQueue")["QueueUrl"]

        def in_dlq() -> bool:
            got = sqs.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return got["ApproximateNumberOfMessages"] == "1"

        _wait(in_dlq, timeout_s=90, what="the bad order in the dead-letter queue")
        msg = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=1)["Messages"][0]
        assert json.loads(msg["Body"]) == {"id": 99, "quantity": 0}
    finally:
        daemon.stop()
