"""``GET /metrics`` after a scripted run of a whole runtime: sync and async invocations (one
failing), a throttled call, and a Redis Streams trigger with a filtered record and a poison
record (bisect, retry, DLQ). The exposition is parsed with prometheus_client's own parser;
names, labels and values are checked."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
import structlog.testing
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventrun.common._urls import public_destination
from eventrun.observe._depths import QueueDepths
from eventrun.observe._metrics import RuntimeMetrics, _Collector, render_metrics, source_gauges
from eventrun.runtime._runtime import Runtime
from eventrun.store import FullQueues, StoreFailures
from tests._runtime_kit import running_app, write_app
from tests.fixtures.redis import RedisServer

HANDLERS = """
import os, time

def api(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True}

def gate(event, context):
    deadline = time.time() + 30
    while not os.path.exists(event["release"]) and time.time() < deadline:
        time.sleep(0.005)
    return "released"

def stream(event, context):
    for record in event["Records"]:
        if record["redis"]["fields"].get("poison") == "1":
            raise ValueError("poison")
    return None
"""

CONFIG = """
connections:
  redis: {{main: {{url: "{redis}"}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  api:
    handler: handlers:api
    concurrency: 2
    maximum_retry_attempts: 0
  gate:
    handler: handlers:gate
    concurrency: 1
  stream:
    handler: handlers:stream
    triggers:
      - redis_streams:
          connection: main
          streams: [orders]
          group: g
          batch_size: 10
          bisect_batch_on_function_error: true
          maximum_retry_attempts: 1
          filter_criteria:
            filters: [{{pattern: '{{"redis": {{"fields": {{"kind": ["order"]}}}}}}'}}]
"""

TRIGGER = "stream/redis_streams[0]"
INVOKE = "/2015-03-31/functions/{}/invocations"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """(sample values by (name, sorted labels), family types by name)."""
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def lbl(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Poll in-process state (no event exists for "the batch settled")."""
    with anyio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - counters have no event
            await anyio.sleep(0.02)
    assert predicate(), what


async def scrape(rt: Runtime) -> tuple[Samples, dict[str, str]]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.bound_port}") as http:
        r = await http.get("/metrics")
    assert r.status_code == 200
    return parse(r.text)


@pytest.mark.redis
async def test_metrics_after_a_scripted_run(tmp_path: Path, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    fields = [
        {"id": "o1", "kind": "order"},
        {"id": "o2", "kind": "order"},
        {"id": "x1", "kind": "other"},  # filtered out
        {"id": "p1", "kind": "order", "poison": "1"},
        {"id": "o3", "kind": "order"},
        {"id": "x2", "kind": "other"},  # filtered out
    ]
    for f in fields:
        await client.xadd("orders", dict(f.items()))
    config = write_app(tmp_path, CONFIG.format(redis=redis_url), {"handlers.py": HANDLERS})
    release = tmp_path / "release"
    async with running_app(config) as rt:
        base = f"http://127.0.0.1:{rt.bound_port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for n in range(3):
                r = await http.post(INVOKE.format("api"), json={"n": n})
                assert r.status_code == 200
            r = await http.post(INVOKE.format("api"), json={"fail": True})
            assert r.headers["X-Amz-Function-Error"] == "Unhandled"
            event = {"X-Amz-Invocation-Type": "Event"}
            assert (
                await http.post(INVOKE.format("api"), json={}, headers=event)
            ).status_code == 202
            r = await http.post(INVOKE.format("api"), json={"fail": True}, headers=event)
            assert r.status_code == 202

            # one slow invocation holds gate's only slot: the next one is throttled
            async with anyio.create_task_group() as tg:

                async def slow() -> None:
                    r = await http.post(INVOKE.format("gate"), json={"release": str(release)})
                    assert r.json() == "released"

                tg.start_soon(slow)
                gate = rt.functions["gate"].runner
                await until(lambda: gate.statistics()["busy"] == 1, "gate busy")
                busy, _ = await scrape(rt)
                r = await http.post(INVOKE.format("gate"), json={"release": str(release)})
                assert r.status_code == 429
                release.touch()

        api = rt.functions["api"].async_invoker.stats
        await until(lambda: api.succeeded == 1 and api.failed == 1, "async invocations done")
        with anyio.fail_after(30):  # counted first, then the failure record, then the ack
            while await rt.store.depth("async:api"):  # noqa: ASYNC110 - no event
                await anyio.sleep(0.02)
        dispatcher = rt.sources[TRIGGER].dispatcher
        assert dispatcher is not None
        await until(lambda: dispatcher.stats.acked == 6, "stream entries settled")
        poller = rt.sources[TRIGGER].poller
        await poller.refresh_statistics()  # type: ignore[union-attr]
        await rt.depths.refresh(rt.store, time.time())
        samples, types = await scrape(rt)
    await client.aclose()

    # while gate's one slot was busy
    assert busy[("eventrun_inflight_invocations", lbl(function="gate"))] == 1
    assert busy[("eventrun_concurrency_saturation", lbl(function="gate"))] == 1.0
    assert busy[("eventrun_workers", lbl(function="gate", state="busy"))] == 1

    def inv(function: str, trigger: str, outcome: str) -> float:
        return samples.get(
            (
                "eventrun_invocations_total",
                lbl(function=function, trigger=trigger, outcome=outcome),
            ),
            0.0,
        )

    assert types["eventrun_invocations"] == "counter"
    assert inv("api", "api", "ok") == 3
    assert inv("api", "api", "error") == 1
    assert inv("api", "async", "ok") == 1
    assert inv("api", "async", "error") == 1  # maximum_retry_attempts: 0
    assert inv("gate", "api", "ok") == 1
    assert samples[("eventrun_throttles_total", lbl(function="gate"))] == 1
    assert samples[("eventrun_throttles_total", lbl(function="api"))] == 0
    assert samples[("eventrun_invocation_duration_seconds_count", lbl(function="api"))] == 6
    assert samples[("eventrun_cold_starts_total", lbl(function="api"))] >= 1
    assert samples[("eventrun_workers", lbl(function="api", state="busy"))] == 0
    assert samples[("eventrun_inflight_invocations", lbl(function="gate"))] == 0
    async_events = {
        event: samples[("eventrun_async_events_total", lbl(function="api", event=event))]
        for event in ("queued", "invoked", "succeeded", "failed", "retried", "expired")
    }
    assert async_events == {
        "queued": 2,
        "invoked": 2,
        "succeeded": 1,
        "failed": 1,
        "retried": 0,
        "expired": 0,
    }
    assert samples[("eventrun_async_queue_depth", lbl(function="api"))] == 0

    # the stream trigger: o1 o2 p1 o3 reach the handler (x1, x2 filtered); p1 is isolated
    # by bisection, retried once (maximum_retry_attempts: 1), then dead-lettered
    t = {"function": "stream", "trigger": TRIGGER}
    assert samples[("eventrun_records_polled_total", lbl(**t))] == 6
    assert samples[("eventrun_records_filtered_total", lbl(**t))] == 2
    assert samples[("eventrun_records_succeeded_total", lbl(**t))] == 3
    assert samples[("eventrun_records_dead_lettered_total", lbl(**t))] == 1
    assert samples[("eventrun_records_acked_total", lbl(**t))] == 6
    assert samples[("eventrun_retries_total", lbl(**t))] == 1
    assert samples[("eventrun_bisects_total", lbl(**t))] >= 1
    assert samples[("eventrun_records_in_flight", lbl(**t))] == 0
    batches = samples[("eventrun_batch_invocations_total", lbl(**t))]
    errors = samples[("eventrun_batch_errors_total", lbl(**t))]
    assert batches == samples[("eventrun_batch_size_records_count", lbl(**t))]
    assert inv("stream", TRIGGER, "ok") + inv("stream", TRIGGER, "error") == batches
    assert inv("stream", TRIGGER, "error") == errors
    # every failing batch contained p1; the successful ones hold o1, o2, o3 exactly once
    assert errors >= 2  # at least: the bisected batch ... and p1's retry
    sizes = samples[("eventrun_batch_size_records_sum", lbl(**t))]
    assert sizes >= 4 + 1  # the first batch of 4, p1 alone at least twice
    assert samples[("eventrun_batch_size_records_bucket", lbl(**t, le="1.0"))] >= 2
    assert samples[("eventrun_source_lag", lbl(**t, shard="orders"))] == 0
    assert samples[("eventrun_source_pending", lbl(**t, shard="orders"))] == 0
    assert ("eventrun_source_oldest_record_age_seconds", lbl(**t, shard="orders")) in samples
    assert not any(name == "eventrun_source_gauge" for name, _ in samples)

    # dead-letter queues and destinations
    assert samples[("eventrun_dlq_depth", lbl(queue="local:stream-dlq"))] == 1
    assert samples[("eventrun_dlq_depth", lbl(queue="local:api-dlq"))] == 1
    assert samples[("eventrun_dlq_depth", lbl(queue="local:gate-dlq"))] == 0
    sent = "eventrun_destination_records_total"
    assert samples[(sent, lbl(destination="local:stream-dlq"))] == 1
    assert samples[(sent, lbl(destination="local:api-dlq"))] == 1


def test_source_statistics_become_labelled_gauges() -> None:
    shards, rest = source_gauges(
        {
            "lag.s1": 5,
            "lag.s2": 7,
            "lag": 12,  # a total next to per-shard values: dropped (no double counting)
            "pending.s1": 1,
            "iterator_age_s": 9.0,  # a total alone: kept with shard ""
            "offset_lag.orders-3": 4,
            "partitions": 6,
            "flag": True,  # not a number
        }
    )
    assert shards == {
        "lag": {"s1": 5.0, "s2": 7.0, "orders-3": 4.0},
        "pending": {"s1": 1.0},
        "oldest_age": {"": 9.0},
    }
    assert rest == {"partitions": 6.0}


def test_destination_labels_carry_no_credentials() -> None:
    assert public_destination("https://user:secret@hooks.example:8443/x?token=t#f") == (
        "https://hooks.example:8443/x"
    )
    assert public_destination("local:orders-dlq") == "local:orders-dlq"
    assert public_destination("kafka:main/orders") == "kafka:main/orders"


class _Stub:
    """What the collector reads of a runtime besides its metrics: nothing running."""

    def __init__(self, metrics: RuntimeMetrics) -> None:
        self.metrics = metrics
        self.functions: dict[str, object] = {}
        self.sources: dict[str, object] = {}
        self.depths = QueueDepths()
        self.router = None
        self.store = SimpleNamespace(full=FullQueues(), failures=StoreFailures())
        self.retention = SimpleNamespace(expired={})


def test_histograms_expose_what_prometheus_clients_histogram_would() -> None:
    """The duration and batch size series are plain numbers (eventrun.observe._metrics.Buckets);
    their exposition equals prometheus_client's own Histogram fed the same values."""
    values = [0.0004, 0.001, 0.001, 0.0031, 0.7, 61.0, 299.9, 5000.0]
    sizes = [1, 1, 2, 99, 100, 101, 20000]
    ours = RuntimeMetrics()
    for value in values:
        ours.observe_duration("fn", value)
    for size in sizes:
        ours.batch_size("fn", "fn/kafka[0]").observe(size)
    ours.batch_size("fn", "fn/sqs[1]")  # exposed at zero before any batch
    reference = CollectorRegistry()
    duration = Histogram(
        "eventrun_invocation_duration_seconds",
        "Duration of invocations, by function.",
        ["function"],
        registry=reference,
        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    )
    batch = Histogram(
        "eventrun_batch_size_records",
        "Records per batch invocation, by function and trigger.",
        ["function", "trigger"],
        registry=reference,
        buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000),
    )
    for value in values:
        duration.labels("fn").observe(value)
    for size in sizes:
        batch.labels("fn", "fn/kafka[0]").observe(size)
    batch.labels("fn", "fn/sqs[1]")

    def histogram_lines(text: bytes) -> list[str]:
        return sorted(
            line
            for line in text.decode().splitlines()
            if line.startswith(("eventrun_invocation_duration", "eventrun_batch_size"))
            and "_created" not in line
        )

    registry = CollectorRegistry()
    registry.register(_Collector(_Stub(ours)))  # type: ignore[arg-type]
    mine = histogram_lines(generate_latest(registry))
    assert mine == histogram_lines(generate_latest(reference))
    assert 'eventrun_invocation_duration_seconds_bucket{function="fn",le="0.001"} 3.0' in mine
    assert (
        'eventrun_batch_size_records_bucket{function="fn",le="+Inf",trigger="fn/kafka[0]"} 7.0'
        in mine
    )


# -- docs/metrics.md against the exposition, and the failure counters -------------------

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
DOC_ROW = re.compile(r"^\| `(eventrun_\w+)` \| (counter|gauge|histogram) \| ([^|]*) \|")

FAILING = """
import os, time

def crash(event, context):
    os._exit(3)

def echo(event, context):
    return event

def held(event, context):
    open(os.environ["STARTED"], "w").close()
    time.sleep(60)
"""

FAILING_CONFIG = """
connections:
  redis: {{main: {{url: "{main}"}}, flaky: {{url: "{flaky}"}}, dest: {{url: "{dest}"}}}}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: 0.5s
functions:
  crashy:
    handler: failing:crash
  sender:
    handler: failing:echo
    destinations: {{on_success: "redis:dest/out"}}
  watcher:
    handler: failing:echo
    runtime: inline
    triggers:
      - redis_streams: {{connection: flaky, streams: [watched], group: g}}
  held:
    handler: failing:held
    timeout: 60
    environment: {{STARTED: "{started}"}}
    triggers:
      - redis_streams: {{connection: main, streams: [jobs], group: g, batch_size: 1}}
"""


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/metrics.md's tables: family name -> (type, label names)."""
    out = {}
    for line in DOCS.read_text().splitlines():
        match = DOC_ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            out[name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return out


def exposed_metrics(text: str) -> dict[str, tuple[str, frozenset[str] | None]]:
    """The exposition's families: name -> (type, label names; None without samples)."""
    out: dict[str, tuple[str, frozenset[str] | None]] = {}
    for family in text_string_to_metric_families(text):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[family.name] = (family.type, frozenset(labels) if family.samples else None)
    return out


NO_SERIES_HERE = {
    "eventrun_source_gauge",
    "eventrun_queue_full",
    "eventrun_dlq_expired",
    "eventrun_store_failures",  # tests/chaos/test_disk_full.py fills a disk for them
}


@pytest.mark.redis
async def test_metrics_md_matches_the_exposition_and_failure_counters_count_causes(
    tmp_path: Path, redis_url: str
) -> None:
    """Every metric docs/metrics.md lists is exposed with its type and labels, and
    nothing else is; the failure counters count their real causes: a worker crash
    (worker_restarts), a destination's redis-server down (destination_send_failures),
    a trigger's redis-server down (source_poll_errors), and the shutdown releasing a
    batch still running past ``shutdown_grace`` (records_released)."""
    flaky, dest = RedisServer(), RedisServer()  # dest: nothing listening until later
    flaky.start()
    started = tmp_path / "held-started"
    config = write_app(
        tmp_path,
        FAILING_CONFIG.format(main=redis_url, flaky=flaky.url, dest=dest.url, started=started),
        {"failing.py": FAILING},
    )
    main = aioredis.Redis.from_url(redis_url, decode_responses=True)
    watcher, held = "watcher/redis_streams[0]", "held/redis_streams[0]"
    try:
        with structlog.testing.capture_logs() as logs:
            async with running_app(config) as rt:
                assert rt.router is not None
                router = rt.router
                base = f"http://127.0.0.1:{rt.bound_port}"
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    r = await http.post(INVOKE.format("crashy"), json={})
                assert r.headers["X-Amz-Function-Error"] == "Unhandled"
                assert r.json()["errorType"] == "Runtime.ExitError"
                await rt.enqueue("sender", b'{"n": 1}')
                await until(lambda: router.failures.get("redis:dest/out", 0) >= 2, "dest down")
                dest.start()
                poll = rt.sources[watcher].dispatcher
                assert poll is not None
                flaky.stop()
                await until(lambda: poll.stats.poll_errors >= 2, "polls failed")
                flaky.start()
                await main.xadd("jobs", {"id": "j1"})
                await until(started.exists, "the held batch running")
                await until(lambda: router.sent.get("redis:dest/out") == 1, "dest back")
                samples, _types = await scrape(rt)
                async with httpx.AsyncClient(base_url=base) as http:
                    text = (await http.get("/metrics")).text
        after, _ = parse(render_metrics(rt.metrics)[0].decode())
    finally:
        await main.aclose()
        flaky.stop()
        dest.stop()

    documented = documented_metrics()
    exposed = exposed_metrics(text)
    assert len(documented) >= 20, "docs/metrics.md's tables were not parsed"
    assert sorted(set(exposed) - set(documented)) == [], "exposed but not documented"
    assert sorted(set(documented) - set(exposed)) == [], "documented but not exposed"
    for name, (kind, labels) in documented.items():
        exposed_kind, exposed_labels = exposed[name]
        assert exposed_kind == kind, name
        if exposed_labels is None:  # no series this run: the Kafka/SQS gauges, and the
            # full-queue and DLQ-retention counters, whose series tests/test_api.py
            # (a full async queue) and tests/test_dlq.py (the runtime's sweep) check
            assert name in NO_SERIES_HERE, f"{name} has no samples to check"
        else:
            assert exposed_labels == labels, name

    def events(name: str, **match: str) -> int:
        return sum(
            1 for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())
        )

    restarts = samples[("eventrun_worker_restarts_total", lbl(function="crashy", reason="crashes"))]
    assert restarts == 1
    failures = samples[
        ("eventrun_destination_send_failures_total", lbl(destination="redis:dest/out"))
    ]
    assert failures == events("sink.send_failed", destination="redis:dest/out") >= 2
    assert samples[("eventrun_destination_records_total", lbl(destination="redis:dest/out"))] == 1
    poll_errors = samples[
        ("eventrun_source_poll_errors_total", lbl(function="watcher", trigger=watcher))
    ]
    assert poll_errors == events("source.poll_failed", trigger=watcher) >= 2
    # j1's batch was still running when the 0.5 s grace ran out: released, not acked
    released = ("eventrun_records_released_total", lbl(function="held", trigger=held))
    assert samples[released] == 0
    assert after[released] == 1
    assert after[("eventrun_records_acked_total", lbl(function="held", trigger=held))] == 0
