"""runtime: inline: same contract, in the daemon's own loop."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import anyio
import pytest

from eventrun.exceptions import FunctionSaturated
from eventrun.workers import InlineRunner, create_runner

from .conftest import APPS, Settings, assert_counts_down, event


def inline(handler: str, **settings: object) -> InlineRunner:
    runner = create_runner(
        "inl",
        Settings(handler=handler, runtime="inline", **settings),  # type: ignore[arg-type]
        config_dir=APPS,
    )
    assert isinstance(runner, InlineRunner)
    return runner


async def test_async_handler_runs_in_this_loop() -> None:
    async with inline("async_app.handler") as runner:
        first = await runner.invoke(event({"a": 1}), request_id="i1")
        second = await runner.invoke(event({"a": 2}))
    body = json.loads(first.payload)
    assert body["pid"] == os.getpid()
    assert body["request_id"] == "i1"
    assert body["event"] == {"a": 1}
    assert first.init_duration_s is not None
    assert second.init_duration_s is None
    assert first.logs.startswith("START RequestId: i1 Version: $LATEST\n")


async def test_sync_handler_runs_in_a_thread() -> None:
    async with inline("basic.context_fields", timeout=3.0) as runner:
        invoked_at = time.monotonic()
        result = await runner.invoke(event({"sleep": 0.1}), identity={"cognitoIdentityId": "x"})
    ctx = json.loads(result.payload)
    assert ctx["function_name"] == "inl"
    assert ctx["memory_limit_in_mb"] == "256"
    assert ctx["identity"] == ["x", None]
    assert_counts_down(ctx, timeout_ms=3000, invoked_at=invoked_at, slept_s=0.1)


async def test_errors_and_marshal() -> None:
    async with inline("async_app.fail") as runner:
        result = await runner.invoke(event({}), request_id="e1")
    body = json.loads(result.payload)
    assert result.error_type == "KeyError"
    assert body["errorType"] == "KeyError"
    assert body["requestId"] == "e1"
    assert body["stackTrace"]
    assert "async_app.py" in body["stackTrace"][0]
    async with inline("basic.unmarshallable") as runner:
        assert (await runner.invoke(event({}))).error_type == "Runtime.MarshalError"


async def test_timeout() -> None:
    async with inline("async_app.sleepy", timeout=0.2) as runner:
        result = await runner.invoke(event({"s": 10}), request_id="t1")
        assert runner.statistics()["timeouts"] == 1
        ok = await runner.invoke(event({"s": 0}))
    assert result.error_type == "Sandbox.Timedout"
    assert json.loads(result.payload)["errorMessage"] == (
        "RequestId: t1 Error: Task timed out after 0.20 seconds"
    )
    assert ok.ok
    assert json.loads(ok.payload) == "woke"


async def test_async_handlers_that_never_await_and_that_await_a_lot() -> None:
    """The first step of an async handler runs outside any cancel scope (see _resume):
    values and exceptions must still flow through every later suspension."""
    async with inline("async_app.immediate", timeout=1) as runner:
        assert json.loads((await runner.invoke(event([1]))).payload) == {"immediate": [1]}
    async with inline("async_app.immediate_fail") as runner:
        failed = await runner.invoke(event({}))
    assert failed.error_type == "ValueError"
    assert "async_app.py" in json.loads(failed.payload)["stackTrace"][0]
    async with inline("async_app.relay", timeout=5) as runner:
        result = await runner.invoke(event({}))
    assert json.loads(result.payload) == ["from a future", "caught thrown in", "slept"]
    # anyio cancel scopes and task groups opened before the first await nest properly
    async with inline("async_app.scoped", timeout=5) as runner:
        scoped = await runner.invoke(event({}))
    assert (scoped.ok, json.loads(scoped.payload)) == (True, "scoped")


async def test_timeout_after_the_first_suspension() -> None:
    async with inline("async_app.stubborn", timeout=0.2) as runner:
        result = await runner.invoke(event({}))
        assert result.error_type == "Sandbox.Timedout"
        assert runner.statistics()["timeouts"] == 1


async def test_timeout_reaches_a_task_group_opened_before_the_first_await(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with inline("async_app.grouped_sleeper", timeout=0.2) as runner:
        with anyio.fail_after(5):
            result = await runner.invoke(event({"marker": str(marker)}))
    assert result.error_type == "Sandbox.Timedout"
    assert marker.read_text() == "child cancelled"


async def test_a_handlers_own_timeout_error_is_an_error_not_a_timeout() -> None:
    async with inline("async_app.own_timeout", timeout=5) as runner:
        result = await runner.invoke(event({}))
        assert runner.statistics()["timeouts"] == 0
    assert result.error_type == "TimeoutError"
    assert json.loads(result.payload)["errorMessage"] == "upstream took too long"


async def test_swallowing_the_timeout_and_returning_late_is_a_timeout() -> None:
    async with inline("async_app.swallower", timeout=0.2) as runner:
        result = await runner.invoke(event({}))
    assert result.error_type == "Sandbox.Timedout"


async def test_logging_is_captured_per_invocation() -> None:
    async with inline("basic.noisy") as runner:
        result = await runner.invoke(event({}), request_id="l1")
    assert "\tl1\tvia logging 42" in result.logs


async def test_concurrency_bound() -> None:
    async with (
        inline("async_app.sleepy", concurrency=1, timeout=5) as runner,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(runner.invoke, event({"s": 0.3}))
        with anyio.fail_after(5):
            while runner.statistics()["busy"] < 1:  # noqa: ASYNC110 - no event for "slot taken"
                await anyio.sleep(0.005)
        with pytest.raises(FunctionSaturated):
            await runner.invoke(event({"s": 0}), wait=False)


async def test_import_error_is_a_result() -> None:
    async with inline("broken.handler") as runner:
        result = await runner.invoke(event({}))
    assert result.error_type == "Runtime.ImportModuleError"
    assert json.loads(result.payload)["errorMessage"].startswith("Unable to import module 'broken'")


@pytest.mark.parametrize("handler", ["async_app.chatty", "async_app.chatty_sync"])
async def test_concurrent_invocations_each_get_only_their_own_log_lines(handler: str) -> None:
    """Output is captured per request id: invocations running at once, logging
    interleaved lines, each get back exactly their own lines (what the Invoke API's
    LogType Tail returns)."""
    group = os.urandom(4).hex()
    tags = [f"alpha{group}", f"beta{group}", f"gamma{group}"]
    lines = 20
    results = {}
    async with inline(handler, concurrency=len(tags), timeout=10) as runner:

        async def run(tag: str) -> None:
            doc = {"tag": tag, "lines": lines, "group": group, "together": len(tags)}
            results[tag] = await runner.invoke(event(doc), request_id=f"rid-{tag}")

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for tag in tags:
                    tg.start_soon(run, tag)
    order = [t for t in sys.modules["async_app"].ORDER if t in tags]
    switches = sum(a != b for a, b in itertools.pairwise(order))
    assert switches > len(tags), f"the invocations did not interleave: {order}"
    for tag in tags:
        result = results[tag]
        assert result.ok, result
        assert json.loads(result.payload) == f"rid-{tag}"
        logged = [
            line.split("\t") for line in result.logs.splitlines() if line.startswith("[WARNING]")
        ]
        assert [(fields[2], fields[3]) for fields in logged] == [
            (f"rid-{tag}", f"{tag} line {i}") for i in range(lines)
        ]
        for other in tags:
            if other != tag:
                assert other not in result.logs


@pytest.mark.parametrize("name", ["returns_a_coroutine", "sync_returns_a_coroutine"])
async def test_an_awaitable_returned_by_a_handler_is_awaited(name: str) -> None:
    async with inline(f"async_app.{name}", timeout=5) as runner:
        result = await runner.invoke(event({"a": 1}))
    assert result.ok, result.logs
    assert json.loads(result.payload) == {"later": {"a": 1}}
