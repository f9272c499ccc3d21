"""The process pool: warm reuse, limits, crashes, recycling, concurrency (real processes)."""

from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import time

import anyio
import pytest
import structlog.testing

from eventrun.exceptions import FunctionSaturated
from eventrun.runtime._gc import YOUNG_THRESHOLD, tuned_gc
from eventrun.workers import InvokeResult

from .conftest import RunnerFactory, event


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); it is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("fork_server", [True, False], ids=["forkserver", "spawn"])
async def test_warm_reuse_runs_init_once_per_worker(
    process_runner: RunnerFactory, fork_server: bool
) -> None:
    async with process_runner(fork_server=fork_server, concurrency=1) as runner:
        first = await runner.invoke(event({"n": 1}))
        second = await runner.invoke(event({"n": 2}))
    assert first.ok, first
    assert second.ok, second
    a, b = json.loads(first.payload), json.loads(second.payload)
    assert a["event"] == {"n": 1}
    assert a["pid"] == b["pid"]
    assert (a["inits"], b["inits"]) == (1, 1)
    assert (a["calls"], b["calls"]) == (1, 2)
    assert first.init_duration_s is not None
    assert first.init_duration_s > 0
    assert second.init_duration_s is None
    assert "Init Duration:" in first.logs
    assert "Init Duration:" not in second.logs
    assert "init: basic imported" in first.logs


async def test_min_warm_workers_exist_before_first_invoke(process_runner: RunnerFactory) -> None:
    async with process_runner(min_warm=2, concurrency=3) as runner:
        stats = runner.statistics()
        assert (stats["workers"], stats["idle"], stats["cold_starts"]) == (2, 2, 2)
        result = await runner.invoke(event({}))
        assert result.ok
        assert result.init_duration_s is None  # provisioned: no cold start on the invoke
        assert runner.statistics()["cold_starts"] == 2


async def test_handler_error_is_a_result_with_lambda_shape(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="basic.fail") as runner:
        result = await runner.invoke(event({"n": 7}), request_id="req-1")
        assert runner.statistics()["errors"] == 1
        again = await runner.invoke(event({"n": 8}))
    assert not result.ok
    assert result.error_type == "ValueError"
    body = json.loads(result.payload)
    assert list(body) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert body["errorMessage"] == "boom 7"
    assert body["errorType"] == "ValueError"
    assert body["requestId"] == "req-1"
    assert len(body["stackTrace"]) == 1
    assert 'basic.py", line' in body["stackTrace"][0]
    assert "in fail" in body["stackTrace"][0]
    assert "[ERROR] ValueError: boom 7" in result.logs
    assert again.error_type == "ValueError"  # the worker survives a handler error


async def test_marshal_error(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="basic.unmarshallable") as runner:
        result = await runner.invoke(event({}))
    assert result.error_type == "Runtime.MarshalError"
    body = json.loads(result.payload)
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"].startswith("Unable to marshal response:")


async def test_async_handler_runs_on_a_warm_loop(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="async_app.handler", concurrency=1) as runner:
        results = [await runner.invoke(event({"i": i}), request_id=f"r{i}") for i in range(3)]
    bodies = [json.loads(r.payload) for r in results]
    assert [b["event"] for b in bodies] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [b["request_id"] for b in bodies] == ["r0", "r1", "r2"]
    assert bodies[-1]["loops"] == 1  # one event loop kept for the worker's lifetime


async def test_timeout_kills_and_replaces_the_worker(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="basic.sleepy", timeout=0.3, concurrency=1) as runner:
        started = time.monotonic()
        slow = await runner.invoke(event({"s": 30}), request_id="slow")
        elapsed = time.monotonic() - started
        fast = await runner.invoke(event({"s": 0}))
        stats = runner.statistics()
    assert elapsed < 5
    assert slow.error_type == "Sandbox.Timedout"
    assert json.loads(slow.payload) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": "RequestId: slow Error: Task timed out after 0.30 seconds",
    }
    assert "going to sleep" in slow.logs  # output written before the kill is kept
    assert "slow Task timed out after 0.30 seconds" in slow.logs
    assert fast.ok
    assert fast.init_duration_s is not None
    assert stats["timeouts"] == 1
    assert stats["cold_starts"] == 2


async def test_timeout_worker_pid_is_gone(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="basic.window", timeout=0.3, concurrency=1) as runner:
        ok = await runner.invoke(event({"s": 0}))
        pid = json.loads(ok.payload)["pid"]
        slow = await runner.invoke(event({"s": 10}))
        assert slow.error_type == "Sandbox.Timedout"
        after = await runner.invoke(event({"s": 0}))
        assert json.loads(after.payload)["pid"] != pid
        with anyio.fail_after(5):
            while _alive(pid):  # noqa: ASYNC110 - state of other processes
                await anyio.sleep(0.01)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("basic.exit3", "Runtime exited with error: exit status 3"),
        ("basic.segfault", "Runtime exited with error: signal: segmentation fault"),
    ],
)
@pytest.mark.parametrize("fork_server", [True, False], ids=["forkserver", "spawn"])
async def test_crash_is_exit_error_and_pool_recovers(
    process_runner: RunnerFactory, handler: str, message: str, fork_server: bool
) -> None:
    async with process_runner(handler=handler, fork_server=fork_server, concurrency=1) as runner:
        crash = await runner.invoke(event({}), request_id="c1")
        again = await runner.invoke(event({}), request_id="c2")
        stats = runner.statistics()
    assert crash.error_type == "Runtime.ExitError"
    assert json.loads(crash.payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: c1 Error: {message}",
    }
    assert again.error_type == "Runtime.ExitError"  # a fresh worker ran (and crashed) again
    assert stats["crashes"] == 2
    assert stats["cold_starts"] == 2


async def test_corrupt_frame_is_a_crash_not_a_daemon_failure(
    process_runner: RunnerFactory,
) -> None:
    async with process_runner(handler="basic.garbage", concurrency=1) as runner:
        result = await runner.invoke(event({}))
        assert result.error_type == "Runtime.ExitError"
        assert runner.statistics()["workers"] == 0


@pytest.mark.parametrize("mb", [300, 4000], ids=["peak-rss", "memory-error"])
async def test_memory_limit(process_runner: RunnerFactory, mb: int) -> None:
    async with process_runner(handler="basic.hog", memory_mb=128, concurrency=1) as runner:
        small = await runner.invoke(event({"mb": 8}))
        big = await runner.invoke(event({"mb": mb}), request_id="big")
        after = await runner.invoke(event({"mb": 8}))
        stats = runner.statistics()
    assert small.ok
    before = json.loads(small.payload)
    assert before["bytes"] == 8 * 1024 * 1024
    assert big.error_type == "Runtime.OutOfMemory"
    assert json.loads(big.payload)["errorType"] == "Runtime.OutOfMemory"
    assert "memory limit of 128 MB exceeded" in big.logs
    # a new worker (a cold start, another process) serves the next invocation in full
    assert after.ok, after.payload
    replaced = json.loads(after.payload)
    assert replaced["bytes"] == 8 * 1024 * 1024
    assert replaced["pid"] != before["pid"]
    assert after.init_duration_s is not None
    assert stats["out_of_memory"] == 1
    assert stats["cold_starts"] == 2


async def test_max_requests_recycles(process_runner: RunnerFactory) -> None:
    async with process_runner(max_requests=2, concurrency=1) as runner:
        pids = [json.loads((await runner.invoke(event({}))).payload)["pid"] for _ in range(5)]
        assert runner.statistics()["recycled"] == 2
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


async def test_concurrency_bound_and_saturation(process_runner: RunnerFactory) -> None:
    results: list[InvokeResult] = []

    async def call() -> None:
        results.append(await runner.invoke(event({"s": 0.3})))

    async with process_runner(handler="basic.window", concurrency=2, timeout=10) as runner:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call)
            with anyio.fail_after(5):
                while runner.statistics()["busy"] < 2:  # noqa: ASYNC110 - state of other processes
                    await anyio.sleep(0.005)
            with pytest.raises(FunctionSaturated):
                await runner.invoke(event({"s": 0}), wait=False)
        assert runner.statistics()["workers"] <= 2
    windows = sorted(
        (json.loads(r.payload)["start"], json.loads(r.payload)["end"]) for r in results
    )
    assert all(r.ok for r in results)
    for start, _ in windows:  # at most two running at any start instant
        assert sum(1 for s, e in windows if s <= start < e) <= 2
    assert windows[2][0] >= min(windows[0][1], windows[1][1]) - 0.01  # the third waited


async def test_cancelled_invoke_kills_the_worker(process_runner: RunnerFactory) -> None:
    async with process_runner(handler="basic.window", concurrency=1, timeout=10) as runner:
        pid = json.loads((await runner.invoke(event({"s": 0}))).payload)["pid"]
        with anyio.move_on_after(0.2):
            await runner.invoke(event({"s": 5}))
        assert runner.statistics()["workers"] == 0
        after = await runner.invoke(event({"s": 0}))
        assert json.loads(after.payload)["pid"] != pid
        with anyio.fail_after(5):
            while _alive(pid):  # noqa: ASYNC110 - state of other processes
                await anyio.sleep(0.01)


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("fork_server", [True, False], ids=["forkserver", "spawn"])
async def test_exit_stops_every_process(process_runner: RunnerFactory, fork_server: bool) -> None:
    before = _descendants(os.getpid())
    async with process_runner(
        handler="basic.window", min_warm=2, concurrency=2, fork_server=fork_server
    ) as runner:
        await runner.invoke(event({"s": 0}))
        ours = _descendants(os.getpid()) - before
        assert len(ours) >= 2
    for pid in ours:
        assert not _alive(pid)


def _fresh_gc_threshold() -> list[int]:
    """Python's own collector defaults, from an interpreter nobody tuned."""
    out = subprocess.run(
        [sys.executable, "-c", "import gc; print(*gc.get_threshold())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(n) for n in out.split()]


async def test_worker_process_state_from_either_launcher(process_runner: RunnerFactory) -> None:
    """Both launchers' workers run under SCHED_BATCH with the collector on, and the
    processes a handler starts inherit SCHED_BATCH; a fork server's workers inherit the
    template's frozen objects (their collections leave those pages shared), a spawned
    interpreter has nothing frozen. Workers keep Python's collector thresholds while
    the daemon runs with its tuned ones (eventrun/_gc.py)."""
    results = {}
    with tuned_gc():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # the daemon's, while it serves
        for fork_server in (True, False):
            async with process_runner(
                handler="basic.process_state", fork_server=fork_server, concurrency=1
            ) as runner:
                result = await runner.invoke(event({}))
            assert result.ok, result
            results[fork_server] = json.loads(result.payload)
    assert results[True]["frozen"] > 1000
    assert results[False]["frozen"] == 0
    defaults = _fresh_gc_threshold()
    for state in results.values():
        assert state["gc_enabled"]
        assert state["gc_threshold"] == defaults
        assert state["batch_scheduling"]
        assert state["child_batch_scheduling"]


async def test_one_invoke_done_line_per_invocation_with_its_fields(
    process_runner: RunnerFactory,
) -> None:
    """docs/metrics.md: per invocation the pool logs ``invoke.done`` with ``function``,
    ``request_id``, ``outcome`` and ``duration_s``."""
    with structlog.testing.capture_logs() as logs:
        async with process_runner("logged", handler="basic.fail", concurrency=1) as runner:
            failed = await runner.invoke(event({"n": 1}), request_id="rid-fail")
        async with process_runner("logged", handler="basic.handler", concurrency=1) as runner:
            ok = await runner.invoke(event({}), request_id="rid-ok")
            quiet = await runner.invoke(event({}), request_id="rid-quiet", log_done=False)
    lines = [e for e in logs if e["event"] == "invoke.done"]
    durations = [e.pop("duration_s") for e in lines]
    assert lines == [
        {"event": "invoke.done", "log_level": "info", "function": "logged"}
        | {"request_id": "rid-fail", "outcome": "error"},
        {"event": "invoke.done", "log_level": "info", "function": "logged"}
        | {"request_id": "rid-ok", "outcome": "ok"},
        {"event": "invoke.done", "log_level": "debug", "function": "logged"}
        | {"request_id": "rid-quiet", "outcome": "ok"},
    ]
    assert durations == [
        round(failed.duration_s, 6),
        round(ok.duration_s, 6),
        round(quiet.duration_s, 6),
    ]
    assert all(isinstance(d, float) and d > 0 for d in durations)


async def test_an_event_with_nan_or_a_huge_number_reaches_the_handler(
    process_runner: RunnerFactory,
) -> None:
    """msgspec refuses NaN, Infinity and numbers past a double; the worker falls back to
    ``json.loads``, as Lambda's Python runtime reads them."""
    raw = b'{"n": NaN, "i": -Infinity, "big": 1e999, "whole": 123456789012345678901234567890}'
    async with process_runner(handler="basic.handler") as runner:
        result = await runner.invoke(raw)
    assert result.ok, result.logs
    seen = json.loads(result.payload)["event"]
    assert math.isnan(seen["n"])
    assert seen["i"] == seen["big"] * -1 == -math.inf
    assert seen["whole"] == 123456789012345678901234567890


async def test_an_idle_worker_that_died_is_replaced_at_checkout(
    process_runner: RunnerFactory,
) -> None:
    """A warm worker killed while idle (OOM killer, an operator's kill) is not handed the
    next invocation: it is discarded and a fresh worker runs the event."""
    async with process_runner(concurrency=1) as runner:
        first = await runner.invoke(event({"n": 1}))
        pid = json.loads(first.payload)["pid"]
        (idle,) = runner._idle  # read only: to wait until the pool heard of the exit
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(10):
            await idle.proc.exited.wait()
        second = await runner.invoke(event({"n": 2}))
        stats = runner.statistics()
    assert second.ok, second
    body = json.loads(second.payload)
    assert body["pid"] != pid
    assert (body["inits"], body["calls"]) == (1, 1)  # a new worker, cold started
    assert second.init_duration_s is not None
    assert stats["cold_starts"] == 2
    assert stats["errors"] == 0
