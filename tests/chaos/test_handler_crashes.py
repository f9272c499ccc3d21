"""Handlers that crash in every way a worker can die, at random records: each poison
record fails on its first 1-2 attempts (exception, ``os._exit``, SIGSEGV, timeout, memory
beyond ``memory_mb``) and then succeeds, so every record must end up handled, in order per
key, with each failure really having happened."""

from __future__ import annotations

import json
import random
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from tests._runtime_kit import running_app
from tests.chaos._kit import unique, until, write_chaos_app
from tests.chaos._ledger import app_yaml, plan, verdict

pytestmark = pytest.mark.redis

SEED = 7
KINDS = ("exception", "exit", "segv", "timeout", "memory")


async def test_every_kind_of_handler_crash_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    rng = random.Random(SEED)
    count = 300
    poisoned = sorted(rng.sample(range(count), 2 * len(KINDS)))
    extra = {
        i: {"poison": KINDS[n % len(KINDS)], "fails": str(rng.randint(1, 2))}
        for n, i in enumerate(poisoned)
    }
    records = plan(count, keys=6, extra=extra)
    ledger = tmp_path / "ledger.jsonl"
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    trigger = (
        "{redis_streams: {connection: main, streams: [crash], group: g, batch_size: 5,"
        " parallelization_factor: 2, key_field: key}}"
    )
    config = write_chaos_app(
        tmp_path,
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": redis_url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "ATTEMPTS": str(attempts), "MEMORY_MB": "128"},
            concurrency=2,
            timeout="1s",
            memory_mb=128,
        ),
    )
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for doc in records:
                pipe.xadd("crash", doc)  # type: ignore[arg-type]
            await pipe.execute()
        async with running_app(config, serve_http=False) as runtime:
            with anyio.fail_after(30):
                await runtime.ready.wait()

            async def all_handled() -> bool:
                return unique(ledger) >= count

            async def all_acked() -> bool:
                return not (await client.xpending("crash", "g"))["pending"]

            await until(all_handled, 100, "every record handled")
            await until(all_acked, 10, "every entry acknowledged")
    finally:
        await client.aclose()
    tried = {p.name: p.stat().st_size for p in attempts.iterdir()}
    expected = {records[i]["id"]: int(extra[i]["fails"]) for i in poisoned}
    assert tried == expected, "every poison failed exactly its configured number of times"
    failures = sum(expected.values())
    # Every kind fails before the ledger write except "memory": its handler returns (and
    # writes) and the worker's peak RSS fails the batch afterwards, so each such failure
    # hands its whole batch (batch_size 5) over again.
    memory = sum(int(extra[i]["fails"]) for i in poisoned if extra[i]["poison"] == "memory")
    v = verdict("handler-crashes", records, ledger, failures_injected=failures, kinds=len(KINDS))
    v.check(max_duplicates=memory * 5)
