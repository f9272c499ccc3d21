"""``command: [python, -m, awslambdaric, app.handler]``: the official Python client."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import anyio

from .conftest import APPS, RunnerFactory, event


def ric(handler: str = "app.handler") -> list[str]:
    return [sys.executable, "-m", "awslambdaric", handler]


async def test_awslambdaric_round_trip_error_and_warm_reuse(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(
        runtime="python3.11", code="ric_py", command=ric(), timeout=3.0, concurrency=1
    ) as runner:
        first = await runner.invoke(event({"echo": 1}))
        failed = await runner.invoke(event({"raise": "bad"}))
        second = await runner.invoke(event({"echo": 2}))
    assert first.ok, first.payload
    a, b = json.loads(first.payload), json.loads(second.payload)
    assert (a["echo"], b["echo"], a["pid"]) == (1, 2, b["pid"])
    assert (a["calls"], b["calls"]) == (1, 3)
    assert a["request_id"] == first.request_id
    assert 2000 < a["remaining"] <= 3000
    assert a["memory"] == "256"  # a str in awslambdaric, as on Lambda
    assert "awslambdaric app init" in first.logs
    assert f"handling {first.request_id}" in first.logs
    assert not failed.ok
    assert failed.error_type == "BadInput"
    body = json.loads(failed.payload)
    assert body["errorType"] == "BadInput"
    assert body["errorMessage"] == "bad"
    assert body["requestId"] == failed.request_id
    assert any("app.py" in frame for frame in body["stackTrace"])


async def test_awslambdaric_import_error_is_an_init_error(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="ric_py", command=ric("broken.handler")) as runner:
        result = await runner.invoke(event({}))
    assert not result.ok
    assert result.error_type == "Runtime.ImportModuleError"
    assert "this_module_does_not_exist" in json.loads(result.payload)["errorMessage"]


async def test_awslambdaric_timeout_crash_and_concurrency(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="ric_py", command=ric(), timeout=1.0, concurrency=4) as runner:
        timed_out = await runner.invoke(event({"sleep": 5}))
        crashed = await runner.invoke(event({"crash": 4}))
        pids: list[int] = []

        async def one(i: int) -> None:
            result = await runner.invoke(event({"echo": i, "sleep": 0.3}))
            assert result.ok, result.payload
            pids.append(json.loads(result.payload)["pid"])

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert timed_out.error_type == "Sandbox.Timedout"
    assert crashed.error_type == "Runtime.ExitError"
    assert "exit status 4" in json.loads(crashed.payload)["errorMessage"]
    assert len(set(pids)) == 4


async def test_awslambdaric_started_by_a_bootstrap(
    rapi_runner: RunnerFactory, tmp_path: Path
) -> None:
    """As Lambda container images start it: ``bootstrap`` execs ``python -m awslambdaric``."""
    code = tmp_path / "fn"
    shutil.copytree(APPS / "ric_py", code)
    bootstrap = code / "bootstrap"
    bootstrap.write_text(f'#!/bin/sh\nexec {sys.executable} -m awslambdaric "$_HANDLER"\n')
    bootstrap.chmod(0o755)
    async with rapi_runner(
        runtime="provided.al2023", handler="app.handler", code=str(code), concurrency=1
    ) as runner:
        first = await runner.invoke(event({"echo": "via bootstrap"}))
        second = await runner.invoke(event({"echo": 2}))
    assert json.loads(first.payload)["echo"] == "via bootstrap"
    assert json.loads(second.payload)["calls"] == 2


async def test_awslambdaric_response_too_large(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="ric_py", command=ric(), concurrency=1) as runner:
        big = await runner.invoke(event({"big": 7 * 1024 * 1024}))
        after = await runner.invoke(event({"echo": 1}))
    assert big.error_type == "Function.ResponseSizeTooLarge"
    # awslambdaric exits when its response is refused; the next event goes to a fresh
    # process instead of failing with the dead one's exit (Lambda re-initialises too)
    assert after.ok, after.payload
    assert after.init_duration_s is not None
