"""Kinesis with real ``eventrun run`` daemons: checkpoints surviving SIGKILL (SQLite
store), and replicas sharing a Redis store splitting the shards and taking over a killed
one's (tests/sources/kinesis/_kit.py for the app and the ledger)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests._daemon import Daemon
from tests.fixtures.moto import MotoServer
from tests.sources.kinesis._kit import (
    app,
    client_kwargs,
    create_stream,
    docs,
    order_violations,
    put,
    read_jsonl,
    until,
    wait_ids,
)

pytestmark = [pytest.mark.kinesis, pytest.mark.timeout(240)]


@pytest.fixture
async def kinesis(moto: MotoServer) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("kinesis", **client_kwargs(moto)) as client:
        yield client


async def test_sigkill_resumes_from_checkpoints(
    tmp_path: Path, moto: MotoServer, kinesis: Any
) -> None:
    """Nothing lost; a record handled twice is one handled but not yet checkpointed at the
    kill: the last ones handled of its shard before the kill."""
    stream = await create_stream(kinesis, 2)
    items = docs(1500, keys=30)
    await put(kinesis, stream, items)
    ledger = tmp_path / "ledger.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 20, poll_interval: 200ms, shard_lease: 1s",
        environment={"SLOW": "0.03"},
    )
    first = Daemon(config)
    await anyio.to_thread.run_sync(first.start)
    try:
        await until(lambda: len(read_jsonl(ledger)) >= 300, 60, "300 records handled")
    finally:
        await anyio.to_thread.run_sync(first.kill)
    before = read_jsonl(ledger)
    assert len(before) < len(items), "the run finished before the kill"
    second = Daemon(config)
    await anyio.to_thread.run_sync(second.start)
    try:
        lines = await wait_ids(ledger, {d["id"] for d in items}, timeout_s=120)
    finally:
        await anyio.to_thread.run_sync(second.terminate)
    counts = Counter(line["id"] for line in lines)
    assert set(counts) == {d["id"] for d in items}
    duplicated = {i for i, n in counts.items() if n > 1}
    by_shard: dict[str, list[str]] = defaultdict(list)
    for line in before:
        by_shard[line["shard"]].append(line["id"])
    for shard_ids in by_shard.values():
        # the duplicates of a shard are a suffix of what it handled before the kill
        dup = [i for i in shard_ids if i in duplicated]
        assert dup == shard_ids[len(shard_ids) - len(dup) :]
        assert len(dup) <= 3 * 20, "more than the batches in flight or awaiting a checkpoint"
    assert order_violations(lines) == (0, 0)
    print(f"kinesis sigkill: {len(before)} handled before the kill, {len(duplicated)} again")


def _shards_by_who(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        out[line["who"]].add(line["shard"])
    return out


@pytest.mark.redis
async def test_replicas_split_shards_and_take_over(
    tmp_path: Path, moto: MotoServer, kinesis: Any, redis_url: str
) -> None:
    """Two daemons on one Redis store hold two of four shards each; after one is killed the
    other holds all four; nothing is lost and order per key holds throughout."""
    stream = await create_stream(kinesis, 4)
    ledger = tmp_path / "ledger.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 20, poll_interval: 200ms, shard_lease: 1s",
        store=redis_url,
        environment={"WHO": "${WHO:-}", "SLOW": "0.01"},
    )
    daemons = [Daemon(config, env={"WHO": who}) for who in ("a", "b")]
    try:
        for d in daemons:
            await anyio.to_thread.run_sync(d.start)
        # settled: both replicas counted, each holding two shards (leases of 1 s)
        await until(lambda: all(_held(d) == 2 for d in daemons), 30, "two shards each")
        phase1 = docs(1200, keys=40)
        await put(kinesis, stream, phase1)
        lines = await wait_ids(ledger, {d["id"] for d in phase1})
        split = _shards_by_who(lines)
        assert len(split["a"]) == len(split["b"]) == 2, split
        assert not split["a"] & split["b"], split
        await anyio.to_thread.run_sync(daemons[0].kill)
        phase2 = docs(1200, keys=40, start=1200)
        await put(kinesis, stream, phase2)
        lines = await wait_ids(ledger, {d["id"] for d in phase1 + phase2}, timeout_s=90)
    finally:
        for d in daemons:
            await anyio.to_thread.run_sync(d.stop)
    after_kill = [line for line in lines if line["id"] >= "r001200"]
    assert {line["who"] for line in after_kill} == {"b"}
    assert len({line["shard"] for line in after_kill}) == 4
    counts = Counter(line["id"] for line in lines)
    assert set(counts) == {d["id"] for d in phase1 + phase2}
    assert order_violations(lines)[1] == 0


def _held(daemon: Daemon) -> int:
    """Shards a daemon holds now, from its lease log events."""
    held: set[str] = set()
    for entry in daemon.logs:
        if entry.get("event") == "stream.lease_acquired":
            held.add(entry["shard"])
        elif entry.get("event") == "stream.lease_released":
            held.discard(entry["shard"])
    return len(held)


@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_a_third_replica_gets_its_share_and_a_killed_ones_is_taken_over(
    tmp_path: Path, moto: MotoServer, kinesis: Any, redis_url: str
) -> None:
    """Six shards: two replicas hold three each; a third joins and each holds two; one is
    killed and the other two hold three each again. Every record handled throughout."""
    stream = await create_stream(kinesis, 6)
    ledger = tmp_path / "ledger.jsonl"
    config = app(
        tmp_path,
        moto,
        f"stream: {stream}, batch_size: 20, poll_interval: 200ms, shard_lease: 1s",
        store=redis_url,
        environment={"WHO": "${WHO:-}"},
    )
    daemons = {who: Daemon(config, env={"WHO": who}) for who in ("a", "b", "c")}
    sent: list[dict[str, Any]] = []

    async def phase(live: str, start: int) -> dict[str, set[str]]:
        """Wait for the live replicas to hold an even split, then put and handle a batch;
        return which replica handled which shards in it."""
        share = 6 // len(live)
        await until(
            lambda: all(_held(daemons[w]) == share for w in live), 40, f"{share} shards each"
        )
        items = docs(600, keys=30, start=start)
        sent.extend(items)
        await put(kinesis, stream, items)
        lines = await wait_ids(ledger, {d["id"] for d in sent}, timeout_s=90)
        ids = {d["id"] for d in items}
        return _shards_by_who([line for line in lines if line["id"] in ids])

    try:
        for who in ("a", "b"):
            await anyio.to_thread.run_sync(daemons[who].start)
        two = await phase("ab", 0)
        await anyio.to_thread.run_sync(daemons["c"].start)
        three = await phase("abc", 600)
        await anyio.to_thread.run_sync(daemons["a"].kill)
        after = await phase("bc", 1200)
    finally:
        for d in daemons.values():
            if d.proc is not None:
                await anyio.to_thread.run_sync(d.stop)
    assert sorted(len(v) for v in two.values()) == [3, 3]
    assert sorted(len(v) for v in three.values()) == [2, 2, 2]
    assert set(after) == {"b", "c"}
    assert sorted(len(v) for v in after.values()) == [3, 3]
    for split in (two, three, after):
        shards = [s for v in split.values() for s in v]
        assert len(shards) == len(set(shards)) == 6, split
    lines = read_jsonl(ledger)
    assert {line["id"] for line in lines} == {d["id"] for d in sent}
    assert order_violations(lines)[1] == 0
