"""Redis Streams end to end: a real redis-server, the real runtime (in-process or the
``eventrun run`` daemon), worker processes, and a ledger of what the handlers saw.

Every produced entry carries ``id``, ``key`` and a per-key ``seq``; the handler in
tests/apps/redis_app/ledger.py appends one JSON line per handled record to a file, so a
test checks completeness, order and duplicates even across daemon restarts. Waits poll
the ledger and Redis' own state (XINFO GROUPS) in bounded loops: there is no event to
wait on for "the consumer group has caught up".
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from eventrun.runtime._runtime import Runtime
from tests._daemon import Daemon
from tests._runtime_kit import running_app, write_app
from tests.fixtures.redis import RedisServer, persistent_args

pytestmark = pytest.mark.redis

HANDLERS = (Path(__file__).parents[2] / "apps" / "redis_app" / "ledger.py").read_text()
GROUP = "workers"


# -- helpers ---------------------------------------------------------------------------


def app(
    root: Path,
    url: str,
    trigger: str,
    *,
    handler: str = "ledger:handler",
    runtime: str = "process",
    concurrency: int = 4,
    environment: dict[str, str] | None = None,
    connection_url: str | None = None,
) -> Path:
    """Write an app with one function ``fn`` and one ``redis_streams`` trigger (YAML
    flow mapping ``trigger``); the ledger is ``root/ledger.jsonl``."""
    env = {"LEDGER": str(root / "ledger.jsonl"), **(environment or {})}
    yaml = f"""
        connections:
          redis: {{main: {{url: "{connection_url or url}"}}}}
        store: {{url: "sqlite:///state.db"}}
        shutdown_grace: 5s
        functions:
          fn:
            handler: {handler}
            runtime: {runtime}
            concurrency: {concurrency}
            min_warm: {min(concurrency, 1) if runtime == "process" else 0}
            timeout: 30s
            environment: {json.dumps(env)}
            triggers:
              - redis_streams: {trigger}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS})


def plan(
    streams: list[str], per_stream: int, keys_per_stream: int = 1
) -> list[tuple[str, dict[str, str]]]:
    """Entries to produce, interleaved across streams; ``seq`` counts per key."""
    seqs: Counter[str] = Counter()
    out = []
    for i in range(per_stream):
        for stream in streams:
            key = f"{stream}-k{i % keys_per_stream}"
            seqs[key] += 1
            fields = {
                "id": f"{stream}-{i:06d}",
                "key": key,
                "seq": str(seqs[key]),
                "data": json.dumps({"n": i, "pad": "x" * 40}),
            }
            out.append((stream, fields))
    return out


async def produce(client: aioredis.Redis, entries: list[tuple[str, dict[str, str]]]) -> None:
    for start in range(0, len(entries), 500):
        async with client.pipeline(transaction=False) as pipe:
            for stream, fields in entries[start : start + 500]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            await pipe.execute()


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Complete lines only (a concurrent append may be half visible)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


async def drained(client: aioredis.Redis, streams: list[str], group: str = GROUP) -> bool:
    """Every entry of every stream delivered to the group and acknowledged."""
    for stream in streams:
        if not await client.exists(stream):
            return False
        states = [i for i in await client.xinfo_groups(stream) if i["name"] == group]
        if not states or states[0]["pending"] or states[0]["lag"] != 0:
            return False
    return True


@asynccontextmanager
async def started(config: Path) -> AsyncIterator[Runtime]:
    """The in-process runtime, once every source is connected (``runtime.ready``)."""
    async with running_app(config, serve_http=False) as runtime:
        with anyio.fail_after(30):
            await runtime.ready.wait()
        yield runtime


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout_s):
            while not await check():  # noqa: ASYNC110 - redis/ledger state, no event
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def order_violations(lines: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(key, previous seq, seq) wherever a key's sequence went backwards or repeated,
    counting only first deliveries (a redelivered entry may legitimately repeat)."""
    last: dict[str, int] = {}
    bad = []
    for line in lines:
        if line["deliveries"] != 1:
            continue
        previous = last.get(line["key"], 0)
        if line["seq"] <= previous:
            bad.append((line["key"], previous, line["seq"]))
        last[line["key"]] = line["seq"]
    return bad


def assert_complete(
    lines: list[dict[str, Any]], entries: list[tuple[str, dict[str, str]]]
) -> Counter[str]:
    """Every produced id is in the ledger; return the count of each id."""
    seen = Counter(line["id"] for line in lines)
    missing = [fields["id"] for _, fields in entries if fields["id"] not in seen]
    assert not missing, f"{len(missing)} entries never handled, e.g. {missing[:5]}"
    assert set(seen) <= {fields["id"] for _, fields in entries}
    return seen


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield c
    finally:
        await c.aclose()


# -- 1. throughput, order per stream, everything acked --------------------------------


async def test_ten_thousand_entries_four_streams(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    streams = ["s0", "s1", "s2", "s3"]
    entries = plan(streams, 2500)
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: {streams}, group: {GROUP}, batch_size: 100, consumer: c1}}",
    )
    ledger = tmp_path / "ledger.jsonl"
    async with started(config):
        await produce(client, entries)
        await wait_until(lambda: drained(client, streams), 60, "all entries acked")
    lines = read_ledger(ledger)
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1, "no failure happened, so nothing may be handled twice"
    assert order_violations(lines) == []
    per_stream = Counter(line["stream"] for line in lines)
    assert per_stream == dict.fromkeys(streams, 2500)
    for stream in streams:
        assert (await client.xpending(stream, GROUP))["pending"] == 0
        assert [line["seq"] for line in lines if line["stream"] == stream] == list(range(1, 2501))


# -- 2. parallelization_factor with key_field: order per key --------------------------


async def test_parallel_lanes_keep_order_per_key(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    entries = plan(["orders"], 4000, keys_per_stream=40)
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: [orders], group: {GROUP}, key_field: key,"
        " parallelization_factor: 4, batch_size: 25}",
        environment={"DELAY": "0.005"},
    )
    async with started(config):
        await produce(client, entries)
        await wait_until(lambda: drained(client, ["orders"]), 60, "all entries acked")
    lines = read_ledger(tmp_path / "ledger.jsonl")
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1
    assert order_violations(lines) == []
    per_key: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        per_key[line["key"]].append(line["seq"])
    assert all(seqs == list(range(1, 101)) for seqs in per_key.values())
    # The lanes really ran side by side: some batches overlapped in time.
    spans = sorted({(line["t0"], line["t1"]) for line in lines})
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps > 0, "no two batches ran concurrently"


# -- 3. poison entry: bisect, retries, on_failure to a redis stream -------------------


async def test_poison_entry_goes_to_redis_dlq(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    entries = plan(["orders"], 300)
    poison_id = "orders-000137"
    for _, fields in entries:
        if fields["id"] == poison_id:
            fields["poison"] = "1"
    await produce(client, entries)
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: [orders], group: {GROUP}, batch_size: 10,"
        " bisect_batch_on_function_error: true, maximum_retry_attempts: 1,"
        ' on_failure: "redis:main/dlq-stream"}',
    )
    async with started(config):

        async def done() -> bool:
            return await drained(client, ["orders"]) and await client.exists("dlq-stream") == 1

        await wait_until(done, 60, "all entries settled and the DLQ written")
    dlq = await client.xrange("dlq-stream")
    assert len(dlq) == 1, dlq
    _, dlq_fields = dlq[0]
    doc = json.loads(dlq_fields["data"])
    poison_entry = next(e for e in await client.xrange("orders") if e[1]["id"] == poison_id)
    entry_id, fields = poison_entry
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert doc["requestContext"]["functionArn"].endswith(":function:fn")
    assert doc["requestContext"]["approximateInvokeCount"] >= 2  # first try + 1 retry
    assert doc["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert doc["version"] == "1.0"
    info = doc["RedisStreamsBatchInfo"]
    assert info["shardId"] == "orders"
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == entry_id
    assert info["batchSize"] == 1
    assert info["streamArn"].endswith(":stream/orders")
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    [record] = doc["payload"]["Records"]
    assert record["redis"]["id"] == entry_id
    assert record["redis"]["fields"] == fields
    assert base64.b64decode(record["redis"]["data"]).decode() == fields["data"]
    assert record["redis"]["deliveryCount"] == 1  # retried in-process, never redelivered
    # Everything else processed exactly once, in order; the poison was acknowledged.
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert [line["id"] for line in lines] == [f["id"] for _, f in entries if f["id"] != poison_id]
    assert order_violations(lines) == []
    assert (await client.xpending("orders", GROUP))["pending"] == 0


# -- 4. SIGKILL of the daemon, restart with the same consumer name --------------------


async def test_sigkill_and_restart_loses_nothing(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    streams = ["s0", "s1"]
    entries = plan(streams, 2000)
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: {streams}, group: {GROUP}, consumer: fixed,"
        " claim_idle: 0, batch_size: 50}",
        concurrency=2,
        environment={"DELAY": "0.05"},
    )
    ledger = tmp_path / "ledger.jsonl"
    first = Daemon(config)
    await anyio.to_thread.run_sync(first.start)
    try:
        await produce(client, entries)

        async def some_handled() -> bool:
            return len(read_ledger(ledger)) >= 800

        await wait_until(some_handled, 60, "800 entries handled")
    finally:
        first.kill()
    handled_before = len(read_ledger(ledger))
    pending_at_kill = {
        stream: {
            row["message_id"]
            for row in await client.xpending_range(stream, GROUP, "-", "+", 10_000)
        }
        for stream in streams
    }
    assert sum(map(len, pending_at_kill.values())) > 0, "nothing was in flight at the kill"
    assert handled_before < len(entries), "the run finished before the kill"

    second = Daemon(config)
    await anyio.to_thread.run_sync(second.start)
    try:
        await wait_until(lambda: drained(client, streams), 60, "all entries acked after restart")
    finally:
        await anyio.to_thread.run_sync(second.terminate)
    lines = read_ledger(ledger)
    seen = assert_complete(lines, entries)
    redelivered = {line["entry"] for line in lines if line["deliveries"] >= 2}
    for stream, ids in pending_at_kill.items():
        assert ids <= redelivered, f"{stream}: pending entries not re-processed"
    assert order_violations(lines) == []
    duplicates = sum(seen.values()) - len(seen)
    print(
        f"sigkill: {handled_before} handled before the kill, "
        f"{sum(map(len, pending_at_kill.values()))} pending at the kill, "
        f"{duplicates} duplicates after the restart"
    )
    assert duplicates <= sum(map(len, pending_at_kill.values()))


# -- 5. entries of a dead consumer are claimed after claim_idle -----------------------


async def test_dead_consumers_entries_are_claimed(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    entries = plan(["orders"], 200)
    await client.xgroup_create("orders", GROUP, "0", mkstream=True)
    await produce(client, entries)
    taken = await client.xreadgroup(GROUP, "dead", {"orders": ">"}, count=60)
    dead_ids = {entry_id for entry_id, _ in taken[0][1]}
    taken_at = time.time()
    assert len(dead_ids) == 60
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: [orders], group: {GROUP}, consumer: live, claim_idle: 1s}}",
    )
    async with started(config):
        await wait_until(lambda: drained(client, ["orders"]), 30, "the dead entries claimed")
    lines = read_ledger(tmp_path / "ledger.jsonl")
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1
    claimed = [line for line in lines if line["entry"] in dead_ids]
    assert len(claimed) == 60
    assert all(line["deliveries"] == 2 for line in claimed)
    assert min(line["t0"] for line in claimed) >= taken_at + 1.0
    assert all(line["deliveries"] == 1 for line in lines if line["entry"] not in dead_ids)
    consumers = {c["name"]: c["pending"] for c in await client.xinfo_consumers("orders", GROUP)}
    assert consumers == {"dead": 0, "live": 0}


# -- 6. redis-server restarted mid-run (durable server) -------------------------------


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(extra_args=persistent_args(data))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restart_mid_run_loses_nothing(
    tmp_path: Path, durable_redis: RedisServer
) -> None:
    streams = ["s0", "s1"]
    entries = plan(streams, 2000)
    before, after = entries[:3000], entries[3000:]
    config = app(
        tmp_path / "app",
        durable_redis.url,
        f"{{connection: main, streams: {streams}, group: {GROUP}, consumer: c1, batch_size: 50}}",
        concurrency=2,
        environment={"DELAY": "0.02"},
    )
    ledger = tmp_path / "app" / "ledger.jsonl"
    client = aioredis.Redis.from_url(durable_redis.url, decode_responses=True)
    try:
        await produce(client, before)
        async with started(config) as runtime:

            async def some_handled() -> bool:
                return len(read_ledger(ledger)) >= 600

            await wait_until(some_handled, 60, "600 entries handled")
            await anyio.to_thread.run_sync(durable_redis.restart)
            await client.connection_pool.disconnect()  # the test's own pooled sockets died
            handled_at_restart = len(read_ledger(ledger))
            assert handled_at_restart < len(entries), "the run finished before the restart"
            await produce(client, after)
            await wait_until(lambda: drained(client, streams), 60, "all acked after the restart")
            [source] = runtime.sources.values()
            assert source.dispatcher is not None
            assert source.dispatcher.stats.poll_errors > 0, "the restart went unnoticed"
        lines = read_ledger(ledger)
        seen = assert_complete(lines, entries)
        assert order_violations(lines) == []
        print(
            f"redis restart: {handled_at_restart} handled at the restart, "
            f"{sum(seen.values()) - len(seen)} duplicates"
        )
    finally:
        await client.aclose()


# -- 7. two daemons in one group share the work ---------------------------------------


async def test_two_daemons_share_a_group(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    streams = ["s0", "s1"]
    entries = plan(streams, 2000)
    ledger = tmp_path / "ledger.jsonl"
    daemons = []
    for who in ("a", "b"):
        config = app(
            tmp_path / who,
            redis_url,
            f"{{connection: main, streams: {streams}, group: {GROUP}, consumer: {who},"
            " batch_size: 50}",
            concurrency=2,
            environment={"LEDGER": str(ledger), "WHO": who, "DELAY": "0.01"},
        )
        daemons.append(Daemon(config))
    try:
        async with anyio.create_task_group() as tg:
            for d in daemons:
                tg.start_soon(anyio.to_thread.run_sync, d.start)
        await produce(client, entries)
        await wait_until(lambda: drained(client, streams), 60, "all entries acked")
    finally:
        for d in daemons:
            await anyio.to_thread.run_sync(d.stop)
    lines = read_ledger(ledger)
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1, "an entry was handled twice although nothing failed"
    share = Counter(line["who"] for line in lines)
    print(f"two daemons: {dict(share)}")
    assert set(share) == {"a", "b"}
    # Redis splits a stream among a group's consumers: order holds per consumer.
    for who in share:
        assert order_violations([line for line in lines if line["who"] == who]) == []


# -- 8. the delivered event, field by field -------------------------------------------


@pytest.mark.parametrize("runtime", ["process", "inline"])
async def test_event_shape_field_by_field(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    """Entries travel as structs (_redis_records.StreamRecord): a process worker decodes
    their JSON, an inline handler gets them turned into the same dicts."""
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    raw = aioredis.Redis.from_url(redis_url)
    try:
        produced = [
            {b"data": b'{"order": 7}', b"key": b"cust-7", b"extra": b"x"},
            {b"body": b"plain text", b"key": b"cust-8"},
            {b"a": b"1", b"b": b"\xff\x00", b"key": b"cust-9"},
            {b"data": b"d", b"body": b"b"},
        ]
        ids = [(await raw.xadd("orders", fields)).decode() for fields in produced]  # type: ignore[arg-type]
    finally:
        await raw.aclose()
    events_file = tmp_path / "events.jsonl"
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: [orders], group: {GROUP}, key_field: key}}",
        handler="ledger:capture",
        runtime=runtime,
        environment={"EVENTS": str(events_file)},
    )
    monkeypatch.setenv("EVENTS", str(events_file))  # an inline function shares os.environ
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with started(config):
            await wait_until(lambda: drained(client, ["orders"]), 30, "the entries handled")
    finally:
        await client.aclose()
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert all(list(event) == ["Records"] for event in events)
    records = [record for event in events for record in event["Records"]]
    location = redis_url.removeprefix("redis://")
    texts = [
        {"data": '{"order": 7}', "key": "cust-7", "extra": "x"},
        {"body": "plain text", "key": "cust-8"},
        {"a": "1", "b": {"base64": base64.b64encode(b"\xff\x00").decode()}, "key": "cust-9"},
        {"data": "d", "body": "b"},
    ]
    payloads = [
        b'{"order": 7}',
        b"plain text",
        json.dumps(texts[2], separators=(",", ":")).encode(),
        json.dumps(texts[3], separators=(",", ":")).encode(),
    ]
    keys = ["cust-7", "cust-8", "cust-9", ""]
    assert len(records) == 4
    for record, entry_id, fields, payload, key in zip(
        records, ids, texts, payloads, keys, strict=True
    ):
        assert record == {
            "eventSource": "eventrun:redis-streams",
            "eventVersion": "1.0",
            "eventID": f"orders:{entry_id}",
            "eventName": "eventrun:redis-streams:record",
            "awsRegion": "eu-central-1",
            "eventSourceARN": f"arn:eventrun:redis:{location}:stream/orders",
            "redis": {
                "redisSchemaVersion": "1.0",
                "stream": "orders",
                "id": entry_id,
                "sequenceNumber": entry_id,
                "partitionKey": key,
                "data": base64.b64encode(payload).decode(),
                "approximateArrivalTimestamp": int(entry_id.split("-")[0]) / 1000,
                "deliveryCount": 1,
                "fields": fields,
            },
        }


# -- 9. on_success pipeline: outputs XADDed before the input is acked -----------------


async def test_on_success_outputs_before_ack(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> None:
    entries = plan(["orders"], 300, keys_per_stream=3)
    config = app(
        tmp_path,
        redis_url,
        f"{{connection: main, streams: [orders], group: {GROUP}, key_field: key,"
        ' batch_size: 20, on_success: "redis:main/out"}',
        environment={"ECHO": "1"},
    )
    commands: list[str] = []
    monitor_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with anyio.create_task_group() as tg, monitor_client.monitor() as monitor:

            async def watch() -> None:
                while True:
                    commands.append((await monitor.next_command())["command"])

            tg.start_soon(watch)
            await produce(client, entries)
            async with started(config):

                async def done() -> bool:
                    return await drained(client, ["orders"]) and await client.xlen("out") == 300

                await wait_until(done, 60, "every output written and every input acked")
            tg.cancel_scope.cancel()
    finally:
        await monitor_client.aclose()
    out = await client.xrange("out")
    by_input = {json.loads(fields["data"])["echo"]: fields for _, fields in out}
    assert len(by_input) == 300
    key_of = {fields["id"]: fields["key"] for _, fields in entries}
    assert all(fields["key"] == key_of[echo] for echo, fields in by_input.items())
    # Order of the server's command stream: each output's XADD precedes its input's XACK.
    entry_of = {f["id"]: i for i, f in await client.xrange("orders")}
    added_at: dict[str, int] = {}
    acked_at: dict[str, int] = {}
    for index, command in enumerate(commands):
        if command.startswith("XADD out"):
            for echo in by_input:
                if f'"echo":"{echo}"' in command:
                    added_at.setdefault(echo, index)
        elif command.startswith(f"XACK orders {GROUP}"):
            for entry in command.split()[3:]:
                acked_at.setdefault(entry, index)
    assert len(added_at) == 300
    assert len(acked_at) == 300
    late = [echo for echo, at in added_at.items() if at > acked_at[entry_of[echo]]]
    assert late == [], f"inputs acked before their output was written: {late[:5]}"
