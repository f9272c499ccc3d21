"""``runtime: nodejs20.x``: Node.js functions through the official aws-lambda-ric client."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import anyio
import pytest

from tests.fixtures.node_ric import node_function

from .conftest import APPS, RunnerFactory, event

# The first test that needs aws-lambda-ric installs it (npm builds a native addon: about
# two minutes; `make test` does it beforehand with `make node-ric`); each test bounds its
# own waits.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return node_function(APPS / "node_fn", tmp_path)


async def test_node_round_trip_context_and_warm_reuse(
    rapi_runner: RunnerFactory, node_dir: Path
) -> None:
    async with rapi_runner(
        "nodefn",
        runtime="nodejs20.x",
        handler="index.handler",
        code=node_dir.name,
        config_dir=node_dir.parent,
        concurrency=1,
    ) as runner:
        first = await runner.invoke(event({"echo": 1, "print": "from node"}))
        second = await runner.invoke(event({"echo": 2}), client_context={"custom": {"k": "v"}})
    assert first.ok, first.payload
    a, b = json.loads(first.payload), json.loads(second.payload)
    assert (a["echo"], b["echo"]) == (1, 2)
    assert a["pid"] == b["pid"]
    assert (a["calls"], b["calls"]) == (1, 2)
    assert a["requestId"] == first.request_id
    assert a["arn"].endswith(":function:nodefn")
    assert b["clientContext"] == {"custom": {"k": "v"}}
    assert "node init" in first.logs
    assert "from node" in first.logs
    assert first.init_duration_s is not None
    assert second.init_duration_s is None


async def test_node_environment(rapi_runner: RunnerFactory, node_dir: Path) -> None:
    names = ["AWS_EXECUTION_ENV", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME"]
    async with rapi_runner(
        runtime="nodejs20.x", handler="index.handler", code=str(node_dir), timeout=3.0
    ) as runner:
        env = json.loads((await runner.invoke(event({"env": names}))).payload)
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_nodejs20.x"
    assert env["_HANDLER"] == "index.handler"
    assert env["LAMBDA_TASK_ROOT"] == env["cwd"] == str(node_dir)
    assert 2000 < env["remaining"] <= 3000


async def test_node_handler_error_shape(rapi_runner: RunnerFactory, node_dir: Path) -> None:
    async with rapi_runner(runtime="nodejs20.x", handler="index.handler", code=str(node_dir)) as r:
        result = await r.invoke(event({"raise": "bad input"}))
        after = await r.invoke(event({"echo": 1}))
    assert not result.ok
    assert result.error_type == "BadInput"
    body = json.loads(result.payload)
    assert body["errorType"] == "BadInput"
    assert body["errorMessage"] == "bad input"
    # Node's shape on Lambda too: the stack is "trace" (Python's clients say "stackTrace")
    assert body["trace"][0] == "BadInput: bad input"
    assert any("index.mjs" in line for line in body["trace"])
    assert after.ok
    assert json.loads(after.payload)["calls"] == 2


async def test_node_timeout_crash_and_replacement(
    rapi_runner: RunnerFactory, node_dir: Path
) -> None:
    async with rapi_runner(
        runtime="nodejs20.x",
        handler="index.handler",
        code=str(node_dir),
        timeout=1.0,
        concurrency=1,
    ) as runner:
        pid0 = json.loads((await runner.invoke(event({}))).payload)["pid"]
        timed_out = await runner.invoke(event({"sleep": 10}))
        pid1 = json.loads((await runner.invoke(event({}))).payload)["pid"]
        crashed = await runner.invoke(event({"crash": 2}))
        pid2 = json.loads((await runner.invoke(event({}))).payload)["pid"]
        hog = await runner.invoke(event({"alloc_mb": 400, "sleep": 5}))
        pid3 = json.loads((await runner.invoke(event({}))).payload)["pid"]
    assert hog.error_type == "Runtime.OutOfMemory"  # memory_mb 256
    assert timed_out.error_type == "Sandbox.Timedout"
    assert crashed.error_type == "Runtime.ExitError"
    assert "exit status 2" in json.loads(crashed.payload)["errorMessage"]
    assert len({pid0, pid1, pid2, pid3}) == 4


async def test_node_init_error(rapi_runner: RunnerFactory, tmp_path: Path) -> None:
    code = node_function(APPS / "node_broken", tmp_path)
    async with rapi_runner(runtime="nodejs20.x", handler="index.handler", code=str(code)) as r:
        result = await r.invoke(event({}))
        again = await r.invoke(event({}))
        stats = r.statistics()
    assert not result.ok
    body = json.loads(result.payload)
    assert body["errorMessage"].endswith("cannot load configuration"), body
    assert result.error_type == body["errorType"]
    assert again.error_type == result.error_type  # re-initialised, failed again
    assert stats["cold_starts"] == 2


async def test_node_concurrency_four_processes(rapi_runner: RunnerFactory, node_dir: Path) -> None:
    pids: list[int] = []
    async with rapi_runner(
        runtime="nodejs20.x", handler="index.handler", code=str(node_dir), concurrency=4
    ) as runner:

        async def one(i: int) -> None:
            result = await runner.invoke(event({"echo": i, "sleep": 0.3}))
            assert result.ok, result.payload
            body = json.loads(result.payload)
            assert body["echo"] == i
            assert body["calls"] == 1
            pids.append(body["pid"])

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert len(set(pids)) == 4


def test_check_names_the_missing_package(tmp_path: Path) -> None:
    from eventrun.workers import runtime_problems

    shutil.copytree(APPS / "node_fn", tmp_path / "fn")
    found = runtime_problems("nodejs20.x", None, "index.handler", tmp_path / "fn", {"PATH": ""})
    assert any("'node' not found on PATH" in p for p in found)
    assert any(f"cd {tmp_path / 'fn'} && npm install aws-lambda-ric" in p for p in found)


async def test_node_streamed_response_is_read_whole(
    rapi_runner: RunnerFactory, node_dir: Path
) -> None:
    async with rapi_runner(runtime="nodejs20.x", handler="index.stream", code=str(node_dir)) as r:
        result = await r.invoke(event({}))
    assert result.ok, result.payload
    body = json.loads(result.payload)
    assert body["statusCode"] == 202
    assert body["headers"] == {"x-streamed": "yes"}
    assert body["isBase64Encoded"] is True
    assert base64.b64decode(body["body"]) == b"hello world"


async def test_node_stream_error_in_trailers(rapi_runner: RunnerFactory, node_dir: Path) -> None:
    async with rapi_runner(
        runtime="nodejs20.x", handler="index.streamfail", code=str(node_dir)
    ) as r:
        result = await r.invoke(event({}))
    assert not result.ok
    assert result.error_type == "TypeError"
    assert json.loads(result.payload)["errorMessage"] == "stream broke"


async def test_node_logs_come_through_the_telemetry_descriptor(
    rapi_runner: RunnerFactory, node_dir: Path
) -> None:
    async with rapi_runner(runtime="nodejs20.x", handler="index.handler", code=str(node_dir)) as r:
        result = await r.invoke(event({"print": "line one\nline two"}))
    # a framed record keeps its line break (printed to stdout, Node makes it "\r")
    assert f"\t{result.request_id}\tINFO\tline one\nline two\n" in result.logs


async def test_node_response_too_large(rapi_runner: RunnerFactory, node_dir: Path) -> None:
    async with rapi_runner(
        runtime="nodejs20.x", handler="index.handler", code=str(node_dir), concurrency=1
    ) as r:
        big = await r.invoke(event({"big": 7 * 1024 * 1024}))
        after = await r.invoke(event({"echo": 1}))
    assert big.error_type == "Function.ResponseSizeTooLarge"
    assert after.ok, after.payload  # the client carried on (or was replaced)
