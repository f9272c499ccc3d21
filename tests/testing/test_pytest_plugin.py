"""The pytest plugin, used the way a user uses it: a project with its own eventrun.yaml,
handlers and test file, run by pytest in a subprocess (pytester)."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

CONFIG = """
connections:
  sqs: {main: {region: us-east-1, endpoint_url: "http://127.0.0.1:9"}}
  kafka: {main: {bootstrap_servers: "127.0.0.1:9"}}
functions:
  jobs:
    handler: fns.jobs
    triggers:
      - sqs:
          connection: main
          queue_name: jobs
          batch_size: 5
          report_batch_item_failures: true
          max_receive_count: 2
          on_failure: "local:jobs-failed"
  events:
    handler: fns.events
    triggers:
      - kafka:
          connection: main
          topics: [events]
          batch_size: 8
          bisect_batch_on_function_error: true
          maximum_retry_attempts: 0
          on_success: "kafka:main/counted"
  counted:
    handler: fns.counted
    triggers:
      - kafka: {connection: main, topics: [counted], on_success: "local:totals"}
  windowed:
    handler: fns.count
    triggers:
      - sqs:
          connection: main
          queue_name: windowed
          batch_size: 10
          maximum_batching_window: 30s
          visibility_timeout: 2m   # longer than the window, or messages come back first
          on_success: "local:batches"
  tick:
    handler: fns.tick
    destinations: {on_success: "local:ticks"}
    triggers:
      - cron: {schedule: "rate(1 minute)"}
"""

HANDLERS = """
import base64

def jobs(event, context):
    failed = [r["messageId"] for r in event["Records"] if r["body"] == "bad"]
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

def events(event, context):
    records = [r for rs in event["records"].values() for r in rs]
    values = [base64.b64decode(r["value"]).decode() for r in records]
    if "boom" in values:
        raise ValueError("boom in batch")
    return {"records": [{"value": v, "key": base64.b64decode(r["key"]).decode()}
                        for v, r in zip(values, records)]}

def counted(event, context):
    records = [r for rs in event["records"].values() for r in rs]
    return {"records": [{"seen": base64.b64decode(r["value"]).decode()} for r in records]}

def count(event, context):
    return {"count": len(event["Records"])}

def tick(event, context):
    return {"time": event["time"], "type": event["detail-type"]}
"""

USER_TESTS = """
import json

import httpx
import pytest
from eventrun.pytest_plugin import Message


def test_sqs_shape_partial_failures_and_dlq(eventrun_app):
    ids = eventrun_app.feed("jobs", ["ok-1", "bad", Message("ok-2", attributes={"a": "1"})])
    queue = eventrun_app.source("jobs")
    assert sorted(queue.deleted) == sorted(ids)  # the bad one too, once dead-lettered
    [dead] = eventrun_app.queue("local:jobs-failed")
    [record] = dead.payload["payload"]["Records"]
    assert record["body"] == "bad"
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "2"


def test_kafka_bisect_sends_only_the_poison_record_to_the_dlq(eventrun_app):
    values = [f"v{n}" for n in range(7)] + ["boom"]
    eventrun_app.feed("events", [Message(v, key=f"k{n}") for n, v in enumerate(values)])
    assert sorted(d["value"] for d in eventrun_app.sent("kafka:main/counted")) == values[:7]
    seen = [json.loads(e.payload["seen"]) for e in eventrun_app.queue("local:totals")]
    assert sorted(d["key"] for d in seen) == [f"k{n}" for n in range(7)]
    [failure] = eventrun_app.dlq("events")
    assert failure["KafkaBatchInfo"]["batchSize"] == 1
    assert failure["KafkaBatchInfo"]["recordsInfo"]["events-0"]["firstRecordOffset"] == "7"
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"


def test_pipeline_reaches_the_second_function(eventrun_app):
    eventrun_app.publish("kafka:main/events", [Message("x", key="k")])
    [total] = eventrun_app.queue("local:totals")
    assert json.loads(total.payload["seen"]) == {"value": "x", "key": "k"}


def test_invoke_sync_and_event(eventrun_app):
    result = eventrun_app.invoke("tick", {"time": "t", "detail-type": "x"})
    assert result.ok
    assert result.payload == {"time": "t", "type": "x"}
    request_id = eventrun_app.invoke(
        "tick", {"time": "e", "detail-type": "y"}, invocation_type="Event"
    )
    assert isinstance(request_id, str)
    eventrun_app.settle()
    ticks = eventrun_app.queue("local:ticks")
    assert [e.payload["responsePayload"]["time"] for e in ticks] == ["e"]
    failed = eventrun_app.invoke("jobs", {"Records": "not a list"})
    assert not failed.ok
    assert failed.payload["errorType"] == "TypeError"


def test_cron_steps_with_the_fake_clock(eventrun_app, eventrun_clock):
    start = eventrun_clock.time()
    eventrun_clock.advance(30)
    eventrun_app.settle()
    assert eventrun_app.queue("local:ticks") == []
    eventrun_clock.advance(150)
    eventrun_app.wait_for(lambda: len(eventrun_app.queue("local:ticks")) >= 2)
    ticks = [e.payload["responsePayload"] for e in eventrun_app.queue("local:ticks")]
    assert {t["type"] for t in ticks} == {"Scheduled Event"}
    assert eventrun_clock.time() == start + 180


def test_a_batching_window_waits_for_the_fake_clock(eventrun_app, eventrun_clock):
    eventrun_app.feed("windowed", ["a", "b", "c"], wait=False)
    queue = eventrun_app.source("windowed")
    eventrun_app.wait_for(lambda: all(m.receives == 1 for m in queue.messages.values()))
    eventrun_clock.advance(29)  # received and held: the window is not over
    assert eventrun_app.queue("local:batches") == []
    assert len(queue.messages) == 3
    eventrun_clock.advance(2)
    eventrun_app.settle()
    assert [e.payload for e in eventrun_app.queue("local:batches")] == [{"count": 3}]


async def test_async_api_and_http(eventrun_app):
    result = await eventrun_app.ainvoke("tick", {"time": "a", "detail-type": "z"})
    assert result.payload["time"] == "a"
    await eventrun_app.afeed("jobs", ["ok"])
    async with httpx.AsyncClient(base_url=eventrun_app.url) as client:
        status = (await client.get("/status")).json()
    assert status["functions"]["jobs"]["invocations"]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", eventrun=textwrap.dedent(CONFIG))
    pytester.makepyfile(fns=textwrap.dedent(HANDLERS))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    return pytester


def test_a_users_test_file_passes_with_the_plugins_fixtures(project: pytest.Pytester) -> None:
    project.makepyfile(test_user=textwrap.dedent(USER_TESTS))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=7)


def test_the_plugin_is_inert_for_a_suite_that_does_not_use_it(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_plain="""
        import sys

        def test_nothing_of_the_runtime_is_imported():
            assert "eventrun.pytest_plugin" in sys.modules  # loaded by its entry point
            assert "eventrun.runtime" not in sys.modules
            assert "eventrun.pytest_plugin._app" not in sys.modules
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)


def test_a_missing_config_is_a_usage_error_naming_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(eventrun_app):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.stdout.fnmatch_lines(["*no eventrun.yaml in*eventrun_config*"])
    assert result.ret != 0


def test_a_broken_config_fails_the_test_naming_the_problem(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", eventrun="functions: {f: {handler: x.y, nope: 1}}\n")
    pytester.makepyfile(test_x="def test_x(eventrun_app):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.stdout.fnmatch_lines(["*the eventrun app did not start*nope*"])
    result.assert_outcomes(errors=1)
