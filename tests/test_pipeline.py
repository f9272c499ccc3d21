"""Pipelines: ``on_success`` outputs per record, and the example chain end to end.

Unit part: the real dispatcher on memory sources checks which outputs are published
(only for records that succeeded, keyed like their input) under partial batch failures,
and the output contract of :func:`eventrun.dispatch._outputs.pipeline_outputs`.

End-to-end part: examples/pipeline (ingest -> enrich -> notify, routed by region) copied to
a temporary directory and run as an ``eventrun run`` daemon against a real redis-server,
and its Kafka variant against a fresh Tansu broker: 5,000 orders arrive at the end
exactly once and in order per key; a SIGKILL mid-run loses nothing; a poison order lands
in the DLQ with its failure record, everything else flows, and after a fix a redrive
brings it to the end; every record goes to its region's topic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest

from eventrun.dispatch._outputs import pipeline_outputs
from eventrun.store._open import open_store
from eventrun.testing import MemoryQueue, MemorySink, MemoryStream
from tests._daemon import Daemon
from tests._dispatch_kit import Handler, data_of, running, until
from tests._runtime_kit import running_app, write_app
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.redis import RedisServer

EXAMPLE = Path(__file__).parents[1] / "examples" / "pipeline"
REGIONS = ("eu", "us", "apac")
POISON = "12,50"


def _json(payload: bytes) -> Any:
    return json.loads(payload)


# -- the output contract ----------------------------------------------------------------


def test_output_forms() -> None:
    keys = ["a", "b", "c"]

    def out(value: Any, keep: list[int], failed: list[int] | None = None) -> list[Any]:
        msgs = pipeline_outputs(json.dumps(value).encode(), keys, keep, failed or [])
        return [(_json(m.payload), m.key) for m in msgs]

    assert out(None, [0, 1, 2]) == []
    assert out({"batchItemFailures": []}, [0, 1, 2]) == []
    assert out({"n": 1}, [0, 1, 2]) == [({"n": 1}, "c")]  # one output per invocation
    assert out({"n": 1}, []) == []
    # aligned with the batch; null = no output; only kept inputs publish
    assert out({"records": [1, None, 3]}, [0, 1, 2]) == [(1, "a"), (3, "c")]
    assert out({"records": [1, 2, 3]}, [0], [1]) == [(1, "a")]
    # aligned with the succeeded inputs (b failed)
    assert out({"records": [1, 3], "batchItemFailures": [{}]}, [0, 2], [1]) == [
        (1, "a"),
        (3, "c"),
    ]
    assert out({"records": [1, 3]}, [0], [1]) == [(1, "a")]  # c is retried, not published
    # unattributable (fan-out): all, keyed like the last kept input
    assert out({"records": [1, 2, 3, 4]}, [0, 1]) == [(1, "b"), (2, "b"), (3, "b"), (4, "b")]
    assert pipeline_outputs(b"not json", keys, [0]) == []


async def test_stream_partial_failure_publishes_only_settled_outputs() -> None:
    """Aligned outputs: inputs after the first failure are retried (Lambda's checkpoint),
    so their outputs of the failed invocation are dropped: each output exactly once."""
    stream = MemoryStream()
    for i in range(6):
        stream.put("s", f"s:{i}".encode(), key=f"k{i % 2}")
    failed_once: set[str] = set()

    def fn(records: list[dict[str, Any]]) -> Any:
        failures = []
        for r in records:
            if data_of(r) == "s:2" and "s:2" not in failed_once:
                failed_once.add("s:2")
                failures.append({"itemIdentifier": r["sequenceNumber"]})
        return {"records": [data_of(r) for r in records], "batchItemFailures": failures}

    out = MemorySink()
    handler = Handler(fn=fn)
    async with running(
        stream, handler, batch_size=6, report_batch_item_failures=True, on_success=out
    ):
        await until(stream, lambda: stream.lag() == 0)
    assert [(_json(m.payload), m.key) for m in out.messages] == [
        (f"s:{i}", f"k{i % 2}") for i in range(6)
    ]
    assert len(handler.calls) == 2


async def test_stream_poison_goes_to_dlq_and_others_flow_once() -> None:
    """Outputs aligned with the succeeded inputs, bisect, retries: the poison record is
    the only one without output, and it is in on_failure."""
    stream = MemoryStream()
    for i in range(20):
        stream.put("s", f"s:{i}".encode(), key=f"k{i % 3}")

    def fn(records: list[dict[str, Any]]) -> Any:
        good = [r for r in records if data_of(r) != "s:7"]
        bad = [{"itemIdentifier": r["sequenceNumber"]} for r in records if r not in good]
        return {"records": [data_of(r) for r in good], "batchItemFailures": bad}

    out, dlq = MemorySink(), MemorySink()
    async with running(
        stream,
        Handler(fn=fn),
        batch_size=8,
        report_batch_item_failures=True,
        bisect=True,
        max_retry_attempts=1,
        on_success=out,
        on_failure=dlq,
    ):
        await until(stream, lambda: stream.lag() == 0)
    assert [_json(m.payload) for m in out.messages] == [f"s:{i}" for i in range(20) if i != 7]
    assert all(m.key == f"k{int(_json(m.payload)[2:]) % 3}" for m in out.messages)
    (failure,) = [_json(m.payload) for m in dlq.messages]
    assert [data_of(r) for r in failure["payload"]["Records"]] == ["s:7"]
    assert dlq.messages[0].attributes == {"trigger": "fn/test[0]"}


async def test_queue_partial_failure_and_fifo_group_keys() -> None:
    queue = MemoryQueue(fifo=True)
    for i in range(6):
        queue.send(f"m{i}".encode(), group=f"g{i % 2}")
    seen: Counter[str] = Counter()

    def fn(records: list[dict[str, Any]]) -> Any:
        failures = []
        for r in records:
            seen[r["body"]] += 1
            if r["body"] == "m3" and seen["m3"] == 1:
                failures.append({"itemIdentifier": r["messageId"]})
        return {"records": [{"out": r["body"]} for r in records], "batchItemFailures": failures}

    out = MemorySink()
    async with running(
        queue, Handler(fn=fn), batch_size=6, report_batch_item_failures=True, on_success=out
    ):
        await until(queue, lambda: queue.depth() == 0)
    published = sorted((_json(m.payload)["out"], m.key) for m in out.messages)
    # m3 failed, so the later m5 of its FIFO group g1 was released too: each exactly once.
    assert published == [(f"m{i}", f"g{i % 2}") for i in range(6)]


async def test_cron_trigger_on_success_publishes_results(tmp_path: Path) -> None:
    config = write_app(
        tmp_path,
        """
        store: {url: "sqlite:///state.db"}
        functions:
          tick:
            handler: app:handler
            runtime: inline
            triggers:
              - cron: {schedule: "rate(1 second)", on_success: "local:ticks"}
        """,
        {"app.py": "async def handler(event, context):\n    return {'records': [1, 2]}\n"},
    )
    async with running_app(config, serve_http=False) as runtime:
        with anyio.fail_after(20):
            while await runtime.store.depth("local:ticks") < 2:  # noqa: ASYNC110 - no event
                await anyio.sleep(0.05)
        entries = await runtime.store.peek("local:ticks")
    assert [_json(e.payload) for e in entries[:2]] == [1, 2]


@pytest.mark.redis
async def test_input_stays_pending_while_the_output_sink_is_down(
    tmp_path: Path, redis_url: str
) -> None:
    """A Redis Streams trigger whose ``on_success`` is a second redis-server that is not
    running: the handled entries stay pending (unacknowledged) and are not handled again;
    once the server is up each output arrives once and the input is acknowledged."""
    import redis.asyncio as aioredis

    dest = RedisServer()  # a free port, nothing listening yet
    config = write_app(
        tmp_path,
        f"""
        connections:
          redis: {{main: {{url: "{redis_url}"}}, dest: {{url: "{dest.url}"}}}}
        store: {{url: "sqlite:///state.db"}}
        functions:
          stage:
            handler: down_stage:handler
            runtime: inline
            triggers:
              - redis_streams:
                  connection: main
                  streams: [in]
                  group: g
                  batch_size: 10
                  key_field: key
                  on_success: "redis:dest/out"
        """,
        {"down_stage.py": STAGE},
    )
    source = aioredis.Redis.from_url(redis_url, decode_responses=True)
    sink = aioredis.Redis.from_url(dest.url, decode_responses=True)
    try:
        for i in range(3):
            await source.xadd("in", {"data": json.dumps({"n": i}), "key": f"k{i}"})
        async with running_app(config, serve_http=False) as rt:
            assert rt.router is not None
            router = rt.router
            with anyio.fail_after(30):
                while router.failures.get("redis:dest/out", 0) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.02)  # a counter: no event for a failed send
            assert (await source.xpending("in", "g"))["pending"] == 3
            dest.start()
            with anyio.fail_after(60):
                while (await source.xpending("in", "g"))["pending"]:  # noqa: ASYNC110
                    await anyio.sleep(0.02)  # the broker's state: no event to wait on
            calls = sys.modules["down_stage"].CALLS
            out = await sink.xrange("out")
    finally:
        await source.aclose()
        await sink.aclose()
        dest.stop()
    assert calls == [[0, 1, 2]]  # handled once: only the publish was retried
    assert [(f.get("key"), _json(f["data"].encode())) for _id, f in out] == [
        ("k0", {"n": 0}),
        ("k1", {"n": 1}),
        ("k2", {"n": 2}),
    ]


STAGE = """
import base64, json

CALLS = []

async def handler(event, context):
    docs = [json.loads(base64.b64decode(r["redis"]["data"])) for r in event["Records"]]
    CALLS.append([d["n"] for d in docs])
    return {"records": docs}
"""


# -- the example, end to end -----------------------------------------------------------


def test_example_configs_check() -> None:
    for name in ("eventrun.yaml", "eventrun.kafka.yaml"):
        done = subprocess.run(
            [sys.executable, "-m", "eventrun", "check", "-c", str(EXAMPLE / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def example_inputs(event: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    """The example's own decoding of a batch event (stages.inputs)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from stages import inputs
    finally:
        sys.path.remove(str(EXAMPLE))
    return list(inputs(event))


def region_of(customer: str) -> str:
    return REGIONS[zlib.crc32(customer.encode()) % len(REGIONS)]


def orders(n: int, poison_at: int | None = None) -> list[dict[str, Any]]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from produce import orders as make
    finally:
        sys.path.remove(str(EXAMPLE))
    return list(make(n, 50, poison_at))


class Backend(Protocol):
    config_name: str
    env: dict[str, str]

    async def produce(self, docs: list[dict[str, Any]]) -> None: ...

    async def read(self, name: str) -> list[tuple[str | None, dict[str, Any]]]:
        """(key, document) of every record of a stream/topic, in order per key."""
        ...


class RedisBackend:
    config_name = "eventrun.yaml"

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {"REDIS_URL": url}

    async def produce(self, docs: list[dict[str, Any]]) -> None:
        sys.path.insert(0, str(EXAMPLE))
        try:
            from produce import produce_redis
        finally:
            sys.path.remove(str(EXAMPLE))
        await produce_redis(self.url, iter(docs))

    async def read(self, name: str) -> list[tuple[str | None, dict[str, Any]]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url, decode_responses=True)
        try:
            entries = await client.xrange(name)
        finally:
            await client.aclose()
        return [(fields.get("key"), json.loads(fields["data"])) for _id, fields in entries]


class KafkaBackend:
    config_name = "eventrun.kafka.yaml"
    TOPICS = ("orders", "orders.valid", "enriched.eu", "enriched.us", "enriched.apac")

    def __init__(self, broker: KafkaBroker) -> None:
        self.bootstrap = broker.bootstrap
        self.env = {"KAFKA": broker.bootstrap}

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            names = [*self.TOPICS, "notifications"]
            await admin.create_topics([NewTopic(t, 3, 1) for t in names])
        finally:
            await admin.close()

    async def produce(self, docs: list[dict[str, Any]]) -> None:
        sys.path.insert(0, str(EXAMPLE))
        try:
            from produce import produce_kafka
        finally:
            sys.path.remove(str(EXAMPLE))
        await produce_kafka(self.bootstrap, iter(docs))

    async def read(self, name: str) -> list[tuple[str | None, dict[str, Any]]]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(name, p) for p in range(3)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            out: dict[int, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
            while [p for p in parts if await consumer.position(p) < ends[p]]:
                batches = await consumer.getmany(*parts, timeout_ms=500)
                for tp, messages in batches.items():
                    for m in messages:
                        key = m.key.decode() if m.key is not None else None
                        out[tp.partition].append((key, json.loads(m.value or b"null")))
        finally:
            await consumer.stop()
        return [item for p in sorted(out) for item in out[p]]


def app_copy(tmp_path: Path) -> Path:
    root = tmp_path / "pipeline"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("state.db*", "*.log", "__py*"))
    return root


async def wait_for_end(
    backend: Backend, done: Callable[[list[Any]], bool], daemon: Daemon, timeout_s: float = 90
) -> list[tuple[str | None, dict[str, Any]]]:
    """Poll the end of the chain (no event exists for "arrived downstream")."""
    with anyio.fail_after(timeout_s):
        while True:
            assert daemon.proc is not None
            assert daemon.proc.poll() is None, daemon.raw[-20:]
            end = await backend.read("notifications")
            if done(end):
                return end
            await anyio.sleep(0.5)


def check_order(end: list[tuple[str | None, dict[str, Any]]]) -> list[str]:
    """Keys whose first arrivals are out of produce order."""
    seen: set[int] = set()
    last: dict[str | None, int] = {}
    bad = []
    for key, doc in end:
        if doc["id"] in seen:
            continue
        seen.add(doc["id"])
        assert key == doc["customer"]
        if doc["id"] < last.get(key, -1):
            bad.append(str(key))
        last[key] = doc["id"]
    return bad


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
async def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "redis":
        yield RedisBackend(request.getfixturevalue("redis_url"))
        return
    broker = KafkaBroker()  # a fresh in-memory broker: fresh topics and groups
    broker.start()
    try:
        kafka = KafkaBackend(broker)
        await kafka.create_topics()
        yield kafka
    finally:
        broker.stop()


def start_daemon(root: Path, backend: Backend, **env: str) -> Daemon:
    daemon = Daemon(root / backend.config_name, env={**backend.env, "EVENTRUN_STORE": "", **env})
    return daemon.start(timeout_s=60)


N = 5000


async def test_chain_exactly_once_in_order_and_routed(tmp_path: Path, backend: Backend) -> None:
    root = app_copy(tmp_path)
    docs = orders(N)
    daemon = start_daemon(root, backend)
    try:
        await backend.produce(docs)
        end = await wait_for_end(backend, lambda e: len(e) >= N, daemon)
        routed = {r: await backend.read(f"enriched.{r}") for r in REGIONS}
    finally:
        daemon.stop()
    counts = Counter(doc["id"] for _key, doc in end)
    assert len(end) == N, "each order exactly once"
    assert set(counts) == set(range(N))
    assert check_order(end) == []
    for region, items in routed.items():
        assert {doc["region"] for _k, doc in items} <= {region}
        assert all(region_of(doc["customer"]) == region for _key, doc in items)
        assert all(key == doc["customer"] for key, doc in items)
    assert sum(len(items) for items in routed.values()) == N


async def test_sigkill_mid_run_loses_nothing(tmp_path: Path, backend: Backend) -> None:
    root = app_copy(tmp_path)
    docs = orders(N)
    daemon = start_daemon(root, backend)
    try:
        async with anyio.create_task_group() as tg:

            async def paced() -> None:  # 10 chunks over ~2 s, so the kill lands mid-run
                for start in range(0, N, N // 10):
                    await backend.produce(docs[start : start + N // 10])
                    await anyio.sleep(0.2)

            tg.start_soon(paced)
            await anyio.to_thread.run_sync(
                daemon.wait_for,
                lambda e: e.get("event") == "batch.done" and e.get("function") == "notify",
                60,
            )
            daemon.kill()
    finally:
        daemon.stop()
    partial = {doc["id"] for _key, doc in await backend.read("notifications")}
    assert len(partial) < N, "the daemon was killed mid-run"
    daemon = start_daemon(root, backend)
    try:
        end = await wait_for_end(
            backend, lambda e: {d["id"] for _k, d in e} >= set(range(N)), daemon, 110
        )
    finally:
        daemon.stop()
    counts = Counter(doc["id"] for _key, doc in end)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"after SIGKILL: {len(end)} arrivals, {duplicates} duplicates, 0 missing")
    assert set(counts) == set(range(N))


async def test_poison_to_dlq_then_fixed_and_redriven(tmp_path: Path, backend: Backend) -> None:
    root = app_copy(tmp_path)
    n, poison = 1000, 500
    await backend.produce(orders(n, poison_at=poison))
    daemon = start_daemon(root, backend)
    try:
        end = await wait_for_end(backend, lambda e: len(e) >= n - 1, daemon)
        daemon.wait_for(lambda e: e.get("event") == "batch.failed", 30)
    finally:
        daemon.stop()
    assert sorted(doc["id"] for _k, doc in end) == [i for i in range(n) if i != poison]
    async with open_store("sqlite:///state.db", config_dir=root) as store:
        (entry,) = await store.peek("local:enrich-dlq")
    failure = json.loads(entry.payload)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["functionArn"].endswith(":function:enrich")
    assert failure["responseContext"]["functionError"] == "Unhandled"
    info = "RedisStreamsBatchInfo" if isinstance(backend, RedisBackend) else "KafkaBatchInfo"
    assert failure[info]["batchSize"] == 1
    assert [doc["amount"] for _ident, doc in example_inputs(failure["payload"])] == [POISON]
    # The fix from the README, then `eventrun dlq redrive` with the daemon running.
    stages = root / "stages.py"
    stages.write_text(
        stages.read_text().replace("Decimal(text)", 'Decimal(text.replace(",", "."))')
    )
    daemon = start_daemon(root, backend)
    try:
        command = [
            *(sys.executable, "-m", "eventrun", "dlq", "redrive", "local:enrich-dlq"),
            *("-c", str(root / backend.config_name), "--url", daemon.url),
        ]
        done = await anyio.run_process(command, check=False, env=daemon.env, cwd=root)
        assert done.returncode == 0, done.stdout + done.stderr
        end = await wait_for_end(backend, lambda e: len(e) >= n, daemon)
    finally:
        daemon.stop()
    (arrived,) = [(k, d) for k, d in end if d["id"] == poison]
    assert arrived[0] == f"c{poison % 50}"
    assert "EUR 12.50" in arrived[1]["text"]
