"""The dispatcher driving real worker processes (not a stand-in handler)."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.dispatch._backoff import Backoff
from eventrun.dispatch._dispatcher import DispatchSettings, TriggerDispatcher
from eventrun.runtime._clock import SystemClock
from eventrun.testing import MemoryQueue, MemorySink, MemoryStream
from eventrun.workers import create_runner

HANDLERS = """
import base64, json, os, time

def _data(r):
    return base64.b64decode(r["data"]).decode() if "data" in r else r["body"]

def ledger(event, context):
    with open(os.environ["LEDGER"], "a") as f:
        for r in event["Records"]:
            f.write(json.dumps({"v": _data(r), "pid": os.getpid()}) + "\\n")

def poison(event, context):
    values = [_data(r) for r in event["Records"]]
    if "s:7" in values:
        raise ValueError("poison s:7")
    ledger(event, context)

def partial(event, context):
    failed = [r["messageId"] for r in event["Records"] if r["body"].startswith("bad")]
    ledger({"Records": [r for r in event["Records"] if r["messageId"] not in failed]}, context)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

def crash(event, context):
    marker = os.environ["LEDGER"] + ".crashed"
    if any(_data(r) == "s:3" for r in event["Records"]) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    ledger(event, context)

def slow(event, context):
    time.sleep(0.3)
    ledger(event, context)
"""


@dataclass
class Settings:
    handler: str
    runtime: str = "process"
    timeout: float = 10.0
    memory_mb: int = 256
    concurrency: int = 4
    min_warm: int = 0
    max_requests: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV


def _ledger(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["v"] for line in path.read_text().splitlines()]


@asynccontextmanager
async def _running(runner: Any, poller: Any, **opts: Any) -> AsyncIterator[TriggerDispatcher]:
    """A dispatcher in front of ``runner`` for the duration of the block."""
    dispatcher = TriggerDispatcher(
        poller,
        DispatchSettings(
            function="fn",
            trigger="fn/memory[0]",
            backoff=Backoff(base_s=0.01, cap_s=0.02),
            **opts,
        ),
        runner.invoke,
        clock=SystemClock(),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        try:
            yield dispatcher
        finally:
            await dispatcher.shutdown(10)


@asynccontextmanager
async def dispatching(
    tmp_path: Path, handler: str, poller: Any, **opts: Any
) -> AsyncIterator[TriggerDispatcher]:
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings(handler, environment={"LEDGER": str(tmp_path / "ledger.jsonl")})
    async with (
        create_runner("fn", settings, config_dir=tmp_path) as runner,
        _running(runner, poller, **opts) as dispatcher,
    ):
        yield dispatcher


async def test_stream_through_worker_processes_in_order(tmp_path: Path) -> None:
    stream = MemoryStream()
    for i in range(500):
        stream.put(f"p{i % 2}", f"p{i % 2}:{i}".encode())
    async with dispatching(tmp_path, "handlers.ledger", stream, batch_size=25):
        with anyio.fail_after(60):
            await stream.wait_until(lambda: stream.lag() == 0)
    seen = _ledger(tmp_path / "ledger.jsonl")
    assert sorted(seen, key=lambda v: int(v.split(":")[1])) == [f"p{i % 2}:{i}" for i in range(500)]
    for shard in ("p0", "p1"):
        nums = [int(v.split(":")[1]) for v in seen if v.startswith(shard)]
        assert nums == sorted(nums)


async def test_bisect_with_real_handler_error(tmp_path: Path) -> None:
    stream = MemoryStream()
    for i in range(20):
        stream.put("s", f"s:{i}".encode())
    dlq = MemorySink()
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    settings = Settings("handlers.poison", environment={"LEDGER": str(tmp_path / "ledger.jsonl")})
    async with create_runner("fn", settings, config_dir=tmp_path) as runner:
        dispatcher = TriggerDispatcher(
            stream,
            DispatchSettings(
                function="fn",
                trigger="t",
                batch_size=20,
                bisect=True,
                max_retry_attempts=0,
                backoff=Backoff(base_s=0.01, cap_s=0.02),
            ),
            runner.invoke,
            clock=SystemClock(),
            on_failure=dlq,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            with anyio.fail_after(60):
                await stream.wait_until(lambda: stream.lag() == 0)
            await dispatcher.shutdown(10)
    assert _ledger(tmp_path / "ledger.jsonl") == [f"s:{i}" for i in range(20) if i != 7]
    (message,) = dlq.messages
    record = json.loads(message.payload)
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert [base64.b64decode(r["data"]).decode() for r in record["payload"]["Records"]] == ["s:7"]


async def test_queue_partial_failure_with_real_handler(tmp_path: Path) -> None:
    queue = MemoryQueue()
    for i in range(10):
        queue.send((f"bad:{i}" if i in (2, 5) else f"ok:{i}").encode())
    async with dispatching(
        tmp_path,
        "handlers.partial",
        queue,
        batch_size=10,
        report_batch_item_failures=True,
        max_receive_count=2,
    ):
        with anyio.fail_after(60):
            await queue.wait_until(lambda: len(queue.released) >= 2)
    assert sorted(_ledger(tmp_path / "ledger.jsonl")) == sorted(
        f"ok:{i}" for i in range(10) if i not in (2, 5)
    )
    assert sorted(m for m, _ in queue.released) == ["m-000003", "m-000006"]
    assert queue.depth() == 2  # the failed ones are back in the queue, not lost


async def test_worker_crash_is_retried_and_nothing_lost(tmp_path: Path) -> None:
    stream = MemoryStream()
    for i in range(6):
        stream.put("s", f"s:{i}".encode())
    async with dispatching(tmp_path, "handlers.crash", stream, batch_size=2):
        with anyio.fail_after(60):
            await stream.wait_until(lambda: stream.lag() == 0)
    seen = _ledger(tmp_path / "ledger.jsonl")
    assert seen == [f"s:{i}" for i in range(6)]  # the crashed batch re-ran, in order
    assert (tmp_path / "ledger.jsonl.crashed").exists()


async def test_shutdown_drains_in_flight_batches_of_workers(tmp_path: Path) -> None:
    stream = MemoryStream()
    for i in range(40):
        stream.put(f"p{i % 4}", f"p{i % 4}:{i}".encode())
    async with dispatching(tmp_path, "handlers.slow", stream, batch_size=5) as d:
        with anyio.fail_after(30):
            # the dispatcher's counters have no event; poll them briefly
            while d.statistics()["in_flight"] < 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    handled = _ledger(tmp_path / "ledger.jsonl")
    committed = sum(stream.committed.values())
    # everything committed was handled; what was handled but not committed is only the
    # tail behind a gap; nothing unhandled was acknowledged
    assert committed <= len(handled) < 40
    for shard, upto in stream.committed.items():
        for offset in range(upto):
            value = f"{shard}:{stream.shards[shard][offset][1].decode().split(':')[1]}"
            assert value in handled


INLINE_HANDLERS = """
import base64

seen = []

def mutate_then_fail(event, context):
    records = event["Records"]
    seen.append([base64.b64decode(r["data"]).decode() for r in records])
    for r in records:
        r["data"] = base64.b64encode(b"mutated").decode()
    records.append({"data": "junk"})
    if len(seen) == 1:
        raise RuntimeError("first attempt fails")
    return None

def mutate_stream_partial(event, context):
    records = event["Records"]
    seen.append([base64.b64decode(r["data"]).decode() for r in records])
    failed = [r["sequenceNumber"] for r in records if len(seen) == 1 and r["sequenceNumber"] == "1"]
    for r in records:
        r["data"] = base64.b64encode(b"mutated").decode()
        r["sequenceNumber"] = "mutated"
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

def mutate_partial(event, context):
    seen.append([r["messageId"] + "=" + r["body"] for r in event["Records"]])
    failed = [r["messageId"] for r in event["Records"] if r["body"].startswith("bad")]
    for r in event["Records"]:
        r["body"] = "mutated"
        r["messageId"] = "mutated"
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}
"""


@asynccontextmanager
async def inline_dispatching(
    tmp_path: Path, handler: str, poller: Any, **opts: Any
) -> AsyncIterator[tuple[TriggerDispatcher, Any]]:
    """An ``inline`` runner behind a dispatcher that shares batch events with it."""
    (tmp_path / "inline_handlers.py").write_text(textwrap.dedent(INLINE_HANDLERS))
    settings = Settings(f"inline_handlers.{handler}", runtime="inline")
    async with (
        create_runner("fn", settings, config_dir=tmp_path) as runner,
        _running(runner, poller, share_events=True, **opts) as dispatcher,
    ):
        import inline_handlers  # type: ignore[import-not-found]  # loaded by the runner

        yield dispatcher, inline_handlers


async def test_inline_retry_sees_the_event_as_sent_not_as_the_handler_left_it(
    tmp_path: Path,
) -> None:
    stream = MemoryStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode())
    async with inline_dispatching(tmp_path, "mutate_then_fail", stream, batch_size=3) as (
        d,
        module,
    ):
        with anyio.fail_after(30):
            await stream.wait_until(lambda: stream.lag() == 0)
    expected = [f"s:{i}" for i in range(3)]
    assert module.seen == [expected, expected]  # the retry got the original records
    assert d.statistics()["invoke_errors"] == 1


async def test_inline_partial_failure_retries_the_unmutated_records(tmp_path: Path) -> None:
    queue = MemoryQueue()
    for i in range(4):
        queue.send((f"bad:{i}" if i == 2 else f"ok:{i}").encode())
    async with inline_dispatching(
        tmp_path,
        "mutate_partial",
        queue,
        batch_size=4,
        report_batch_item_failures=True,
        max_receive_count=5,
    ) as (_d, module):
        with anyio.fail_after(30):
            await queue.wait_until(lambda: len(module.seen) >= 2)
    first, second = module.seen[:2]
    assert first == [f"m-00000{i + 1}=" + ("bad:2" if i == 2 else f"ok:{i}") for i in range(4)]
    assert second == ["m-000003=bad:2"]  # released as sent, then received again


async def test_inline_stream_partial_failure_resumes_with_the_records_as_sent(
    tmp_path: Path,
) -> None:
    stream = MemoryStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode())
    async with inline_dispatching(
        tmp_path, "mutate_stream_partial", stream, batch_size=3, report_batch_item_failures=True
    ) as (_d, module):
        with anyio.fail_after(30):
            await stream.wait_until(lambda: stream.lag() == 0)
    # resumes from the failed item: the same Record objects, events as first sent
    assert module.seen == [["s:0", "s:1", "s:2"], ["s:1", "s:2"]]
