"""``GET /metrics`` after a scripted run of a whole runtime: sync and async invocations (one
failing), a throttled call, and a Redis Streams trigger with a filtered record and a poison
record (bisect, retry, DLQ). The exposition is parsed with prometheus_client's own parser;
names, labels and values are checked."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventrun._depths import QueueDepths
from eventrun._metrics import RuntimeMetrics, _Collector, public_destination, source_gauges
from eventrun._runtime import Runtime
from eventrun.store import FullQueues
from tests._runtime_kit import running_app, write_app

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
        self.store = SimpleNamespace(full=FullQueues())
        self.retention = SimpleNamespace(expired={})


def test_histograms_expose_what_prometheus_clients_histogram_would() -> None:
    """The duration and batch size series are plain numbers (eventrun._metrics.Buckets);
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
