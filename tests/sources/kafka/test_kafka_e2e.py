"""Kafka end to end: a real broker (Tansu), the real runtime (in-process or the
``eventrun run`` daemon), worker processes, and a ledger of what the handlers saw.

Every produced value is JSON with ``id``, ``key`` and a per-key ``seq``; the handler
(:data:`HANDLERS`, written into each app) appends one JSON line per record of every
invocation to ``$LEDGER`` (one ``write`` on an ``O_APPEND`` descriptor per batch), so
completeness, order and duplicates are checked even across daemon restarts. "Caught up"
is the group's committed offsets reaching the end of every partition, read with an
aiokafka admin client; waits poll that in bounded loops (there is no event for it).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from eventrun.runtime._runtime import Runtime
from tests._daemon import Daemon
from tests._runtime_kit import running_app, write_app
from tests.fixtures.kafka import KafkaBroker, create_topic, unique_name

pytestmark = pytest.mark.kafka

HANDLERS = '''
import base64, json, os, time


def _append(path, lines):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, "".join(line + "\\n" for line in lines).encode())
    finally:
        os.close(fd)


def handler(event, context):
    """Ledger lines for every record; ``ok`` false for a reported failure and after."""
    started = time.time()
    batch = [(shard, r) for shard, recs in event["records"].items() for r in recs]
    docs = [json.loads(base64.b64decode(r["value"])) for _, r in batch]
    for doc in docs:
        if doc.get("poison"):
            raise ValueError("poison record " + doc["id"])
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    failures = []  # each fail_once record fails its first delivery, reported in reverse
    for (shard, r), doc in zip(batch, docs):
        marker = os.path.join(os.environ.get("MARKERS", "."), doc["id"] + ".failed")
        if doc.get("fail_once") and not os.path.exists(marker):
            open(marker, "w").close()
            failures.insert(0, {"partition": shard, "offset": r["offset"]})
    failed = min(failures, key=lambda f: f["offset"]) if failures else None
    lines = []
    for (shard, r), doc in zip(batch, docs):
        ok = failed is None or shard != failed["partition"] or r["offset"] < failed["offset"]
        lines.append(json.dumps({
            "id": doc["id"], "key": doc["key"], "seq": doc["seq"], "shard": shard,
            "offset": r["offset"], "ok": ok, "who": os.environ.get("WHO", ""),
            "request": context.aws_request_id, "first": batch[0][1]["offset"],
            "t0": started, "t1": time.time(),
        }))
    _append(os.environ["LEDGER"], lines)
    if failures:
        return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}
    return None


def capture(event, context):
    _append(os.environ["EVENTS"], [json.dumps(event)])


def capture_types(event, context):
    """What an inline handler holds: the type names of each record and its key/value
    (to types.jsonl beside this module: an inline function shares the daemon's env)."""
    _append(os.path.join(os.path.dirname(__file__), "types.jsonl"), [json.dumps([
        [type(r).__name__, type(r.get("key")).__name__, type(r.get("value")).__name__, r]
        for recs in event["records"].values() for r in recs
    ])])
'''


# -- helpers ---------------------------------------------------------------------------


def app(
    root: Path,
    bootstrap: str,
    trigger: str,
    *,
    handler: str = "ledger:handler",
    runtime: str = "process",
    concurrency: int = 4,
    environment: dict[str, str] | None = None,
    ledger: Path | None = None,
) -> Path:
    """An app with one function ``fn`` (``runtime``) and one ``kafka`` trigger (YAML flow
    mapping ``trigger``); the connection joins groups fast (2 s session timeout)."""
    env = {"LEDGER": str(ledger or root / "ledger.jsonl"), **(environment or {})}
    yaml = f"""
        connections:
          kafka:
            main:
              bootstrap_servers: "{bootstrap}"
              session_timeout: 2s
              heartbeat_interval: 300ms
        store: {{url: "sqlite:///state.db"}}
        shutdown_grace: 10s
        functions:
          fn:
            handler: {handler}
            runtime: {runtime}
            concurrency: {concurrency}
            min_warm: 1
            timeout: 30s
            environment: {json.dumps(env)}
            triggers:
              - kafka: {trigger}
    """
    return write_app(root, yaml, {"ledger.py": HANDLERS})


def plan(count: int, keys: int, partitions: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(partition, key, value)`` to produce; a key always goes to one partition and
    ``seq`` counts per key from 1."""
    seqs: Counter[str] = Counter()
    out = []
    for i in range(count):
        k = i % keys
        key = f"k{k:04d}"
        seqs[key] += 1
        out.append((k % partitions, key, {"id": f"r{i:06d}", "key": key, "seq": seqs[key]}))
    return out


async def produce(
    bootstrap: str, topic: str, entries: list[tuple[int, str, dict[str, Any]]]
) -> dict[int, int]:
    """Send everything, pipelined (one producer keeps each partition in order); return
    the end offset (last offset + 1) per partition written to."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, json.dumps(value).encode(), key=key.encode(), partition=p)
            for p, key, value in entries
        ]
        ends: dict[int, int] = {}
        for future in futures:
            meta = await future
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Complete lines only (a concurrent append may be half visible)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (partitions without one left out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            if offset is not None:
                out[p] = offset
        return out
    finally:
        await consumer.stop()


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout_s):
            while not await check():  # noqa: ASYNC110 - broker state has no event
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def wait_committed_to_end(
    bootstrap: str, topic: str, group: str, ends: dict[int, int], timeout_s: float = 90
) -> dict[int, int]:
    """Wait until the group committed ``ends`` (from the producer's metadata: Tansu's
    ListOffsets answers the base offset of the last record batch + 1, not the end)."""
    last: dict[int, int] = {}

    async def caught_up() -> bool:
        nonlocal last
        last = await committed(bootstrap, group, topic, len(ends))
        return last == ends

    await wait_until(caught_up, timeout_s, f"group {group} committed to the end {ends}")
    return last


@asynccontextmanager
async def started(config: Path) -> AsyncIterator[Runtime]:
    """The in-process runtime, once every source is connected (``runtime.ready``)."""
    async with running_app(config, serve_http=False) as runtime:
        with anyio.fail_after(30):
            await runtime.ready.wait()
        yield runtime


def handled(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["ok"]]


def first_deliveries(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for line in handled(lines):
        if line["id"] not in seen:
            seen.add(line["id"])
            out.append(line)
    return out


def order_violations(lines: list[dict[str, Any]], field: str) -> list[tuple[str, int, int]]:
    """Where, among first deliveries, ``seq`` per key (``field="key"``) or the offset per
    partition (``field="shard"``) went backwards."""
    number = "seq" if field == "key" else "offset"
    last: dict[str, int] = {}
    bad = []
    for line in first_deliveries(lines):
        previous = last.get(line[field], -1)
        if line[number] <= previous:
            bad.append((line[field], previous, line[number]))
        last[line[field]] = line[number]
    return bad


def assert_complete(
    lines: list[dict[str, Any]], entries: list[tuple[int, str, dict[str, Any]]]
) -> Counter[str]:
    """Every produced id was handled; return how often each was."""
    seen = Counter(line["id"] for line in handled(lines))
    missing = [value["id"] for _, _, value in entries if value["id"] not in seen]
    assert not missing, f"{len(missing)} records never handled, e.g. {missing[:5]}"
    assert set(seen) <= {value["id"] for _, _, value in entries}
    return seen


# -- 1. throughput, order per partition, offsets committed to the end ------------------


async def test_ten_thousand_records_four_partitions(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 4)
    group = unique_name("g")
    entries = plan(10_000, keys=100, partitions=4)
    config = app(tmp_path, boot, f"{{connection: main, topics: [{topic}], group_id: {group}}}")
    async with started(config):
        ends = await produce(boot, topic, entries)
        final = await wait_committed_to_end(boot, topic, group, ends)
    assert final == dict.fromkeys(range(4), 2500)
    lines = read_ledger(tmp_path / "ledger.jsonl")
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1, "no failure happened, so nothing may be handled twice"
    assert order_violations(lines, "shard") == []
    assert order_violations(lines, "key") == []
    for p in range(4):
        offsets = [line["offset"] for line in lines if line["shard"] == f"{topic}-{p}"]
        assert offsets == list(range(2500))


# -- 2. parallelization_factor: order per key ------------------------------------------


async def test_parallel_lanes_keep_order_per_key(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 2)
    group = unique_name("g")
    entries = plan(4000, keys=80, partitions=2)
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 20,"
        " parallelization_factor: 4, maximum_batching_window: 50ms}",
        environment={"DELAY": "0.005"},
    )
    async with started(config):
        ends = await produce(boot, topic, entries)
        await wait_committed_to_end(boot, topic, group, ends)
    lines = read_ledger(tmp_path / "ledger.jsonl")
    seen = assert_complete(lines, entries)
    assert max(seen.values()) == 1
    assert order_violations(lines, "key") == []
    per_key: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        per_key[line["key"]].append(line["seq"])
    assert all(seqs == list(range(1, 51)) for seqs in per_key.values())
    # Lanes of one partition really ran side by side: some of its batches overlapped.
    spans = sorted({(line["t0"], line["t1"]) for line in lines if line["shard"] == f"{topic}-0"})
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlaps > 0, "no two batches of one partition ran concurrently"


# -- 3. poison record: bisect, retries, on_failure to a Kafka topic --------------------


async def test_poison_record_is_bisected_to_the_kafka_dlq(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 1)
    dlq = await create_topic(boot, 1, name=f"{topic}-dlq")
    group = unique_name("g")
    entries = plan(300, keys=10, partitions=1)
    poison = entries[137][2]
    poison["poison"] = True
    ends = await produce(boot, topic, entries)
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 10,"
        " bisect_batch_on_function_error: true, maximum_retry_attempts: 1,"
        f' on_failure: "kafka:main/{dlq}"}}',
    )
    async with started(config):
        await wait_committed_to_end(boot, topic, group, ends, timeout_s=60)
    consumer = AIOKafkaConsumer(dlq, bootstrap_servers=boot, auto_offset_reset="earliest")
    await consumer.start()
    try:
        with anyio.fail_after(20):
            got = await consumer.getmany(timeout_ms=5000)
        messages = [m for batch in got.values() for m in batch]
    finally:
        await consumer.stop()
    assert len(messages) == 1, messages
    [message] = messages
    assert message.key == poison["key"].encode()  # the original record's key
    doc = json.loads(message.value)
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert doc["requestContext"]["functionArn"].endswith(":function:fn")
    # bisect 10 -> 5 -> 3 -> 2 -> 1 takes several invocations; then one retry.
    assert doc["requestContext"]["approximateInvokeCount"] >= 2
    assert doc["responseContext"]["functionError"] == "Unhandled"
    assert doc["version"] == "1.0"
    info = doc["KafkaBatchInfo"]
    assert info["batchSize"] == 1
    assert info["bootstrapServers"] == boot
    assert info["payloadSize"] > 0
    assert info["recordsInfo"] == {
        f"{topic}-0": {
            "firstRecordOffset": "137",
            "lastRecordOffset": "137",
            "firstRecordTimestamp": info["recordsInfo"][f"{topic}-0"]["firstRecordTimestamp"],
            "lastRecordTimestamp": info["recordsInfo"][f"{topic}-0"]["firstRecordTimestamp"],
        }
    }
    assert info["recordsInfo"][f"{topic}-0"]["firstRecordTimestamp"].endswith("Z")
    payload = doc["payload"]
    assert payload["eventSource"] == "SelfManagedKafka"
    [record] = payload["records"][f"{topic}-0"]
    assert record["offset"] == 137
    assert json.loads(base64.b64decode(record["value"])) == poison
    assert base64.b64decode(record["key"]).decode() == poison["key"]
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert [line["id"] for line in lines] == [v["id"] for _, _, v in entries if v is not poison]
    assert order_violations(lines, "shard") == []


# -- 4. SIGKILL of the daemon mid-run, restart --------------------------------------------


async def test_sigkill_and_restart_loses_nothing(tmp_path: Path, kafka_broker: KafkaBroker) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 4)
    group = unique_name("g")
    entries = plan(4000, keys=40, partitions=4)
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 20}}",
        concurrency=2,
        environment={"DELAY": "0.05"},
    )
    ledger = tmp_path / "ledger.jsonl"
    first = Daemon(config)
    await anyio.to_thread.run_sync(first.start)
    try:
        ends = await produce(boot, topic, entries)
        await wait_until(lambda: _count(ledger, 800), 60, "800 records handled")
    finally:
        first.kill()
    handled_before = len(read_ledger(ledger))
    at_kill = await committed(boot, group, topic, 4)
    assert handled_before < len(entries), "the run finished before the kill"

    second = Daemon(config)
    await anyio.to_thread.run_sync(second.start)
    try:
        await wait_committed_to_end(boot, topic, group, ends)
    finally:
        await anyio.to_thread.run_sync(second.terminate)
    lines = read_ledger(ledger)
    seen = assert_complete(lines, entries)
    assert order_violations(lines, "key") == []
    assert order_violations(lines, "shard") == []
    duplicates = sum(seen.values()) - len(seen)
    uncommitted = handled_before - sum(at_kill.values())
    print(
        f"\nsigkill: {handled_before} handled before the kill, {sum(at_kill.values())} "
        f"committed at the kill, {duplicates} duplicates after the restart"
    )
    # Only records handled but not yet committed at the kill may come twice.
    assert duplicates <= max(uncommitted, 0)


async def _count(ledger: Path, at_least: int) -> bool:
    return len(read_ledger(ledger)) >= at_least


# -- 5. two daemons in one group: split, then SIGTERM hands partitions over --------------


async def test_two_daemons_split_partitions_and_hand_over(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 4)
    group = unique_name("g")
    entries = plan(4000, keys=40, partitions=4)
    ledger = tmp_path / "ledger.jsonl"
    trigger = f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 20}}"
    configs = [
        app(
            tmp_path / who,
            boot,
            trigger,
            concurrency=2,
            ledger=ledger,
            environment={"DELAY": "0.04", "WHO": who},
        )
        for who in ("a", "b")
    ]
    a, b = Daemon(configs[0]), Daemon(configs[1])
    await anyio.to_thread.run_sync(a.start)
    try:
        await anyio.to_thread.run_sync(b.start)
        ends = await produce(boot, topic, entries)

        async def both_working() -> bool:
            whos = Counter(line["who"] for line in read_ledger(ledger))
            return whos["a"] >= 200 and whos["b"] >= 200

        await wait_until(both_working, 60, "both daemons handling records")
        split = {
            who: {line["shard"] for line in read_ledger(ledger) if line["who"] == who}
            for who in "ab"
        }
        assert split["a"], split
        assert split["b"], split
        assert not split["a"] & split["b"], split
        assert len(read_ledger(ledger)) < len(entries), "the run finished before the hand-over"

        def all_four() -> int:
            events = a.events("kafka.partitions_assigned")
            return sum(1 for e in events if len(e["shards"]) == 4)

        before = all_four()
        assert await anyio.to_thread.run_sync(b.terminate) == 0
        handed_over_at = len(read_ledger(ledger))

        async def taken_over() -> bool:
            return all_four() > before

        await wait_until(taken_over, 30, "daemon a assigned all four partitions")
        await wait_committed_to_end(boot, topic, group, ends)
    finally:
        b.stop()
        a.stop()
    lines = read_ledger(ledger)
    seen = assert_complete(lines, entries)
    duplicates = sum(seen.values()) - len(seen)
    print(f"\ntwo daemons: hand-over after {handed_over_at} records, {duplicates} duplicates")
    assert duplicates == 0, "a graceful hand-over commits what it handled"
    assert order_violations(lines, "key") == []
    assert order_violations(lines, "shard") == []
    after = {line["shard"] for line in lines[handed_over_at:]}
    assert after <= {f"{topic}-{p}" for p in range(4)}
    assert {line["who"] for line in lines[handed_over_at:] if line["shard"] in split["b"]} == {"a"}


# -- 6. the delivered event is Lambda's self-managed Kafka event -------------------------


async def test_event_has_lambdas_self_managed_kafka_shape(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 2)
    group = unique_name("g")
    producer = AIOKafkaProducer(bootstrap_servers=boot, acks="all")
    await producer.start()
    try:
        meta = [
            await producer.send_and_wait(
                topic,
                b"Hello, this is a test.",
                key=b"k1",
                partition=1,
                headers=[("headerKey", b"headerValue"), ("dup", b"\x00\xff")],
            ),
            await producer.send_and_wait(topic, b'{"n":2}', key=b"k1", partition=1),
            await producer.send_and_wait(topic, None, key=b"\xff\xfe", partition=1),  # tombstone
            await producer.send_and_wait(topic, b"no key", key=None, partition=1),
        ]
    finally:
        await producer.stop()
    events = tmp_path / "events.jsonl"
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 10,"
        " maximum_batching_window: 1s}",
        handler="ledger:capture",
        environment={"EVENTS": str(events)},
    )
    async with started(config):
        await wait_committed_to_end(boot, topic, group, {0: 0, 1: 4}, timeout_s=30)
    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert list(event) == ["eventSource", "bootstrapServers", "records"]
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == boot
    assert list(event["records"]) == [f"{topic}-1"]
    records = event["records"][f"{topic}-1"]
    assert [r["offset"] for r in records] == [m.offset for m in meta] == [0, 1, 2, 3]
    for r, m in zip(records, meta, strict=True):
        assert (r["topic"], r["partition"]) == (topic, 1)
        assert r["timestamp"] == m.timestamp
        assert isinstance(r["timestamp"], int)
        assert r["timestampType"] == "CREATE_TIME"
        assert list(r)[:5] == ["topic", "partition", "offset", "timestamp", "timestampType"]
    first, second, tombstone, keyless = records
    assert list(first) == [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestampType",
        "key",
        "value",
        "headers",
    ]
    assert first["key"] == base64.b64encode(b"k1").decode()
    assert first["value"] == "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg=="  # the value in Lambda's docs
    assert first["headers"] == [
        {"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]},
        {"dup": [0, 255]},
    ]
    assert json.loads(base64.b64decode(second["value"])) == {"n": 2}
    assert second["headers"] == []
    assert "value" not in tombstone
    assert base64.b64decode(tombstone["key"]) == b"\xff\xfe"
    assert "key" not in keyless
    assert base64.b64decode(keyless["value"]) == b"no key"


async def test_inline_handler_and_filters_see_plain_json_records(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    """Kafka records travel as structs (eventrun.sources.kafka._records.KafkaEvent); a
    filter and an inline handler get them as Lambda's dicts, base64 strings included."""
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 1)
    group = unique_name("g")
    values = [b'{"keep": true, "n": 1}', b'{"keep": false, "n": 2}', b'{"keep": true, "n": 3}']
    producer = AIOKafkaProducer(bootstrap_servers=boot, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k", partition=0)
    finally:
        await producer.stop()
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 10,"
        " maximum_batching_window: 500ms,"
        """ filter_criteria: {filters: [{pattern: '{"value": {"keep": [true]}}'}]}}""",
        handler="ledger:capture_types",
        runtime="inline",
    )
    async with started(config):
        await wait_committed_to_end(boot, topic, group, {0: 3}, timeout_s=30)
    lines = (config.parent / "types.jsonl").read_text().splitlines()
    seen = [record for line in lines for record in json.loads(line)]
    assert [kinds for *kinds, _ in seen] == [["dict", "str", "str"]] * 2
    assert [json.loads(base64.b64decode(r["value"])) for *_, r in seen] == [
        {"keep": True, "n": 1},
        {"keep": True, "n": 3},
    ]
    assert [r["offset"] for *_, r in seen] == [0, 2]
    assert {r["key"] for *_, r in seen} == {base64.b64encode(b"k").decode()}


# -- 7. partial batch failure with Kafka item identifiers -------------------------------


async def test_partial_failure_resumes_from_the_lowest_failed_offset(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    boot = kafka_broker.bootstrap
    topic = await create_topic(boot, 1)
    group = unique_name("g")
    entries = plan(50, keys=5, partitions=1)
    entries[23][2]["fail_once"] = True
    entries[26][2]["fail_once"] = True  # same batch, reported first: the lowest one wins
    ends = await produce(boot, topic, entries)
    markers = tmp_path / "markers"
    markers.mkdir()
    config = app(
        tmp_path,
        boot,
        f"{{connection: main, topics: [{topic}], group_id: {group}, batch_size: 10,"
        " report_batch_item_failures: true}",
        environment={"MARKERS": str(markers)},
    )
    async with started(config):
        await wait_committed_to_end(boot, topic, group, ends, timeout_s=60)
    lines = read_ledger(tmp_path / "ledger.jsonl")
    invocations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        invocations[line["request"]].append(line)
    batches = [[line["offset"] for line in batch] for batch in invocations.values()]
    failed = [
        [line["offset"] for line in batch]
        for batch in invocations.values()
        if not all(line["ok"] for line in batch)
    ]
    assert failed == [list(range(20, 30))], batches
    # The retry starts exactly at the lowest reported offset; the records before it are done.
    assert list(range(23, 30)) in batches
    seen = Counter(line["offset"] for line in handled(lines))
    assert seen == Counter(range(50)), "every record handled exactly once"
    delivered = Counter(line["offset"] for line in lines)
    assert {o for o, n in delivered.items() if n == 2} == set(range(23, 30))
    assert sorted(p.name for p in markers.iterdir()) == ["r000023.failed", "r000026.failed"]
