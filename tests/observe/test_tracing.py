"""OpenTelemetry traces: carriers read from each record shape, spans per batch and per
invocation, and one trace across a pipeline (in-memory exporter in-process; a real daemon
exporting OTLP/HTTP to a receiver started by the test)."""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventrun.common import xray_to_traceparent
from eventrun.observe import _tracing as tracing
from eventrun.observe import record_carrier
from eventrun.pytest_plugin import EventrunApp, Message
from tests._daemon import daemon
from tests.fixtures.moto import MotoServer
from tests.fixtures.otlp import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


# -- carriers --------------------------------------------------------------------------


def test_xray_header_becomes_a_traceparent() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert xray_to_traceparent(header) == (
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    )
    assert xray_to_traceparent("Root=1-5759e988;Parent=x") is None
    unsampled = header.replace("Sampled=1", "Sampled=0")
    assert xray_to_traceparent(unsampled) == (
        "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"
    )


def test_carriers_of_every_record_shape() -> None:
    sqs_attr = {"messageAttributes": {"traceparent": {"stringValue": TRACEPARENT}}}
    sqs_xray = {"attributes": {"AWSTraceHeader": f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={PARENT}"}}
    kafka = {"headers": [{"traceparent": list(TRACEPARENT.encode())}, {"other": [65]}]}
    redis_record = {"redis": {"fields": {"data": "{}", "traceparent": TRACEPARENT}}}
    http = {"headers": {"TraceParent": TRACEPARENT, "x": "y"}}
    for event in (sqs_attr, sqs_xray, kafka, redis_record, http):
        assert record_carrier(event)["traceparent"] == TRACEPARENT, event
    assert record_carrier({"body": "x", "attributes": {}}) == {}
    # an explicit traceparent attribute wins over the X-Ray header
    both = {**sqs_xray, "messageAttributes": {"traceparent": {"stringValue": "00-a-b-01"}}}
    assert record_carrier(both)["traceparent"] == "00-a-b-01"


# -- in-process, in-memory exporter ------------------------------------------------------------

PIPELINE = """
connections:
  kafka: {main: {bootstrap_servers: "127.0.0.1:9"}}
functions:
  first:
    handler: stages.passthrough
    triggers:
      - kafka: {connection: main, topics: [a], on_success: "kafka:main/b"}
  second:
    handler: stages.passthrough
    triggers:
      - kafka: {connection: main, topics: [b], on_success: "kafka:main/c"}
  third:
    handler: stages.passthrough
    triggers:
      - kafka: {connection: main, topics: [c], on_success: "kafka:main/out"}
"""

STAGES = """
import base64

def passthrough(event, context):
    values = [base64.b64decode(r["value"]).decode()
              for rs in event["records"].values() for r in rs]
    return {"records": [{"v": v} for v in values]}
"""


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    try:
        yield memory
    finally:
        tracing.shutdown_tracing()


def test_a_pipeline_in_memory_is_one_trace(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    (tmp_path / "stages.py").write_text(textwrap.dedent(STAGES))
    (tmp_path / "eventrun.yaml").write_text(textwrap.dedent(PIPELINE))
    app = EventrunApp(tmp_path / "eventrun.yaml", state_dir=tmp_path).start()
    try:
        app.feed("first", [Message('"x"', key="k", attributes={"traceparent": TRACEPARENT})])
    finally:
        app.stop()
    spans = exporter.get_finished_spans()
    batches = {s.name: s for s in spans if s.name.startswith("batch ")}
    assert set(batches) == {"batch first", "batch second", "batch third"}
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE}
    assert f"{batches['batch first'].parent.span_id:016x}" == PARENT
    # each stage's batch is a child of the previous stage's batch (published in its span)
    assert batches["batch second"].parent.span_id == batches["batch first"].context.span_id
    assert batches["batch third"].parent.span_id == batches["batch second"].context.span_id
    assert [f"{link.context.span_id:016x}" for link in batches["batch first"].links] == [PARENT]
    invokes = [s for s in spans if s.name.startswith("invoke ")]
    assert {s.parent.span_id for s in invokes} == {s.context.span_id for s in batches.values()}
    [out] = app.bus.sent["kafka:main/out"]
    assert out.attributes["traceparent"].split("-")[1] == TRACE


def test_tracing_is_off_without_otel_variables() -> None:
    assert not tracing.configure_tracing({})
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}
    assert not tracing.configure_tracing(disabled)
    assert not tracing.configure_tracing({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.tracing_enabled()
    assert tracing.trace_attributes() == {}


# -- a real daemon exporting OTLP/HTTP -----------------------------------------------------

STREAMS = """
connections:
  redis: {{main: {{url: "{url}"}}}}
functions:
  ingest:
    handler: stages.passthrough
    triggers:
      - redis_streams: {{connection: main, streams: [{p}-a], on_success: "redis:main/{p}-b"}}
  enrich:
    handler: stages.passthrough
    triggers:
      - redis_streams: {{connection: main, streams: [{p}-b], on_success: "redis:main/{p}-c"}}
  notify:
    handler: stages.passthrough
    triggers:
      - redis_streams: {{connection: main, streams: [{p}-c], on_success: "redis:main/{p}-out"}}
  hello:
    handler: stages.hello
    triggers:
      - http: {{path: /hello, methods: [GET], auth: none}}
  later:
    handler: stages.later
    destinations: {{on_success: "redis:main/{p}-done"}}
"""

REDIS_STAGES = """
import base64

def passthrough(event, context):
    return {"records": [{"v": base64.b64decode(r["redis"]["data"]).decode()}
                        for r in event["Records"]]}

def later(event, context):
    return {"later": event}

def hello(event, context):
    import os
    from opentelemetry import trace

    current = trace.get_current_span().get_span_context()
    return {"statusCode": 200, "body": os.environ["_X_AMZN_TRACE_ID"] + " " +
            format(current.trace_id, "032x") + " " + format(current.span_id, "016x")}
"""


@pytest.mark.redis
def test_a_daemon_exports_one_trace_across_three_stages(
    tmp_path: Path, redis_url: str, otlp_receiver: OtlpReceiver
) -> None:
    prefix = f"otel-{os.getpid()}-{time.monotonic_ns()}"
    (tmp_path / "stages.py").write_text(textwrap.dedent(REDIS_STAGES))
    config = tmp_path / "eventrun.yaml"
    config.write_text(textwrap.dedent(STREAMS.format(url=redis_url, p=prefix)))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_SERVICE_NAME": "pipeline-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with daemon(config, env=env) as d:
        client.xadd(f"{prefix}-a", {"data": '{"order": 1}', "traceparent": TRACEPARENT})
        other = "0af7651916cd43dd8448eb211c80319c"
        response = httpx.get(
            f"{d.url}/hello", headers={"traceparent": f"00-{other}-b7ad6b7169203331-01"}
        )
        xray, handler_trace, handler_span = response.text.split()
        # the Invoke API: an Event invocation runs later, in the caller's trace
        third = "5b8aa5a2d2c872e8321cf37308d69df2"
        invoke = f"{d.url}/2015-03-31/functions/later/invocations"
        queued = httpx.post(
            invoke,
            json={"n": 1},
            headers={
                "X-Amz-Invocation-Type": "Event",
                "traceparent": f"00-{third}-0020000000000001-01",
            },
        )
        assert queued.status_code == 202
        spans = otlp_receiver.wait_for(
            lambda spans: {"batch notify", "invoke hello", "async later"} <= {s.name for s in spans}
        )
        [out] = client.xrange(f"{prefix}-out")
        d.wait_for(lambda _e: bool(client.xlen(f"{prefix}-done")))
        [done] = client.xrange(f"{prefix}-done")
    pipeline = [s for s in spans if s.trace_id == TRACE]
    names = {s.name for s in pipeline}
    assert {"batch ingest", "batch enrich", "batch notify"} <= names
    assert {"invoke ingest", "invoke enrich", "invoke notify"} <= names
    assert {s.service for s in spans} == {"pipeline-test"}
    ingest = next(s for s in pipeline if s.name == "batch ingest")
    assert ingest.parent_span_id == PARENT
    assert ingest.links == [(TRACE, PARENT)]
    assert ingest.attributes["faas.name"] == "ingest"
    [hello] = [s for s in spans if s.name == "invoke hello"]
    assert hello.trace_id == other
    assert hello.parent_span_id == "b7ad6b7169203331"
    # the handler ran inside the invocation span: Lambda's variable and the OTel context
    assert xray == f"Root=1-{other[:8]}-{other[8:]};Parent={hello.span_id};Sampled=1"
    assert (handler_trace, handler_span) == (other, hello.span_id)
    assert out[1]["traceparent"].split("-")[1] == TRACE  # what eventrun published carries it
    [queued_run] = [s for s in spans if s.name == "async later"]
    assert queued_run.trace_id == third
    assert queued_run.parent_span_id == "0020000000000001"
    invoke_later = next(s for s in spans if s.name == "invoke later")
    assert invoke_later.parent_span_id == queued_run.span_id
    assert done[1]["traceparent"].split("-")[1:3] == [third, queued_run.span_id]


SQS_CONFIG = """
connections:
  sqs: {{main: {{endpoint_url: "{endpoint}", region: us-east-1}}}}
functions:
  relay:
    handler: relay.handler
    triggers:
      - sqs: {{connection: main, queue_url: "{inbox}", on_success: "sqs:main/{outbox}"}}
"""


@pytest.mark.sqs
def test_an_sqs_aws_trace_header_continues_into_the_batch_and_onto_the_next_queue(
    tmp_path: Path, moto: MotoServer, otlp_receiver: OtlpReceiver
) -> None:
    inbox, outbox = moto.create_queue(), moto.create_queue()
    (tmp_path / "relay.py").write_text("def handler(event, context):\n    return {'ok': 1}\n")
    config = tmp_path / "eventrun.yaml"
    config.write_text(
        textwrap.dedent(
            SQS_CONFIG.format(endpoint=moto.endpoint_url, inbox=inbox.url, outbox=outbox.name)
        )
    )
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    trace = "5759e988bd862e3fe1be46a994272793"
    client = moto.boto3_client()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with daemon(config, env=env):
        client.send_message(
            QueueUrl=inbox.url,
            MessageBody='{"order": 1}',
            MessageSystemAttributes={"AWSTraceHeader": {"StringValue": xray, "DataType": "String"}},
        )
        spans = otlp_receiver.wait_for(lambda s: any(x.name == "batch relay" for x in s))
        received: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            received = client.receive_message(
                QueueUrl=outbox.url, MessageAttributeNames=["All"], WaitTimeSeconds=1
            ).get("Messages", [])
    [batch] = [s for s in spans if s.name == "batch relay"]
    assert (batch.trace_id, batch.parent_span_id) == (trace, "53995c3f42cd8ad8")
    [message] = received
    attributes = message["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert attributes["traceparent"]["StringValue"].split("-")[1] == trace
