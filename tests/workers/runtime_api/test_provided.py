"""``runtime: provided*``: a custom ``bootstrap`` speaking the Runtime API (real processes)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import pytest

from eventrun.workers import RuntimeApiRunner, _harden

from .conftest import APPS, RunnerFactory, event


async def test_bootstrap_round_trip_and_warm_reuse(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py", concurrency=1) as runner:
        assert isinstance(runner, RuntimeApiRunner)
        first = await runner.invoke(event({"echo": 1, "print": "hello from the handler"}))
        second = await runner.invoke(event({"echo": 2}))
    assert first.ok, first.payload
    a, b = json.loads(first.payload), json.loads(second.payload)
    assert (a["echo"], b["echo"]) == (1, 2)
    assert a["pid"] == b["pid"]
    assert (a["calls"], b["calls"]) == (1, 2)
    assert first.init_duration_s is not None
    assert second.init_duration_s is None
    assert "custom runtime init" in first.logs
    assert "hello from the handler" in first.logs
    assert first.logs.index("START RequestId") < first.logs.index("hello from the handler")
    assert "Init Duration:" in first.logs
    assert "hello from the handler" not in second.logs
    assert runner.statistics()["cold_starts"] == 1


async def test_shell_bootstrap_with_curl(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_sh", concurrency=1) as runner:
        ok = await runner.invoke(event({"n": 1}))
        failed = await runner.invoke(event("please fail"))
    assert ok.ok, ok.payload
    assert json.loads(ok.payload)["shell"] == {"n": 1}
    assert f"handling {ok.request_id}" in ok.logs
    assert not failed.ok
    assert failed.error_type == "ShellError"
    assert json.loads(failed.payload) == {
        "errorType": "ShellError",
        "errorMessage": "asked to fail",
    }


async def test_shell_bootstrap_timeout_crash_init_error_and_concurrency(
    rapi_runner: RunnerFactory,
) -> None:
    async with rapi_runner(code="custom_sh", timeout=1.0, concurrency=4) as runner:
        timed_out = await runner.invoke(event("sleep"))
        crashed = await runner.invoke(event("crash"))
        pids: list[int] = []

        async def one(i: int) -> None:
            result = await runner.invoke(event({"n": i}))
            assert result.ok, result.payload
            pids.append(json.loads(result.payload)["pid"])

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert timed_out.error_type == "Sandbox.Timedout"
    assert crashed.error_type == "Runtime.ExitError"
    assert "exit status 9" in json.loads(crashed.payload)["errorMessage"]
    assert len(set(pids)) == 4  # four processes, one event each at a time
    async with rapi_runner(code="custom_sh", environment={"SH_INIT": "error"}) as runner:
        failed = await runner.invoke(event({}))
    assert failed.error_type == "Runtime.ShellInit"
    assert json.loads(failed.payload)["errorMessage"] == "missing config"


async def test_lambda_environment_and_next_headers(rapi_runner: RunnerFactory) -> None:
    names = [
        "AWS_LAMBDA_RUNTIME_API",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "TZ",
        "MINE",
    ]
    async with rapi_runner(
        "envfn",
        code="custom_py",
        handler="function.handler",
        memory_mb=512,
        environment={"MINE": "yes"},
    ) as runner:
        env = json.loads((await runner.invoke(event({"env": names}))).payload)
        before = time.time()
        result = await runner.invoke(
            event({"headers": True}),
            client_context={"custom": {"a": 1}},
            identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
        )
    host, port = env["AWS_LAMBDA_RUNTIME_API"].split(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    code = str(APPS / "custom_py")
    assert env["LAMBDA_TASK_ROOT"] == code
    assert env["cwd"] == code
    assert env["_HANDLER"] == "function.handler"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "envfn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/envfn"
    assert "/[$LATEST]" in env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"] is None  # Lambda sets none for custom runtimes
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["TZ"] == ":UTC"
    assert env["MINE"] == "yes"
    headers = {k.lower(): v for k, v in json.loads(result.payload).items()}
    assert headers["lambda-runtime-aws-request-id"] == result.request_id
    assert headers["lambda-runtime-invoked-function-arn"].endswith(":function:envfn")
    deadline = int(headers["lambda-runtime-deadline-ms"])  # now + timeout (5 s), in Unix ms
    assert int(before * 1000) + 5000 <= deadline <= time.time() * 1000 + 5000
    assert headers["lambda-runtime-trace-id"].startswith("Root=1-")
    assert json.loads(headers["lambda-runtime-client-context"]) == {"custom": {"a": 1}}
    assert json.loads(headers["lambda-runtime-cognito-identity"])["cognitoIdentityId"] == "id-1"


async def test_handler_error_is_lambdas_error_json(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py") as runner:
        result = await runner.invoke(event({"raise": "bad input"}))
        after = await runner.invoke(event({"echo": "still warm"}))
    assert not result.ok
    assert result.error_type == "ValueError"
    assert json.loads(result.payload) == {
        "errorType": "ValueError",
        "errorMessage": "bad input",
        "stackTrace": ["bootstrap line 1"],
    }
    assert after.ok  # a handled error keeps the process
    assert runner.statistics()["cold_starts"] == 1


async def test_timeout_kills_and_replaces_the_process(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py", timeout=1.0, concurrency=1) as runner:
        first = json.loads((await runner.invoke(event({"echo": 0}))).payload)
        timed_out = await runner.invoke(event({"sleep": 30, "print": "about to sleep"}))
        after = json.loads((await runner.invoke(event({"echo": 1}))).payload)
        stats = runner.statistics()
    assert not timed_out.ok
    assert timed_out.error_type == "Sandbox.Timedout"
    assert json.loads(timed_out.payload) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {timed_out.request_id} Error: "
        "Task timed out after 1.00 seconds",
    }
    assert 1.0 <= timed_out.duration_s < 2.0
    assert "about to sleep" in timed_out.logs
    assert "Status: timeout" in timed_out.logs
    assert after["pid"] != first["pid"]
    assert after["calls"] == 1
    assert not _alive(first["pid"])
    assert stats["timeouts"] == 1
    assert stats["cold_starts"] == 2


async def test_crash_mid_invocation_is_an_exit_error(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py", concurrency=1) as runner:
        crashed = await runner.invoke(event({"crash": 7, "print": "going down"}))
        after = await runner.invoke(event({"echo": 1}))
        stats = runner.statistics()
    assert not crashed.ok
    assert crashed.error_type == "Runtime.ExitError"
    assert json.loads(crashed.payload) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {crashed.request_id} Error: Runtime exited with error: "
        "exit status 7",
    }
    assert "going down" in crashed.logs
    assert after.ok
    assert json.loads(after.payload)["calls"] == 1
    assert stats["crashes"] == 1


@pytest.mark.parametrize(
    ("mode", "error_type"), [("error", "Runtime.InitBoom"), ("exit", "Runtime.ExitError")]
)
async def test_init_failure_fails_the_first_invocation_and_reinitialises(
    rapi_runner: RunnerFactory, mode: str, error_type: str
) -> None:
    async with rapi_runner(code="custom_py", environment={"RAPI_INIT": mode}) as runner:
        first = await runner.invoke(event({}))
        second = await runner.invoke(event({}))
        stats = runner.statistics()
    for result in (first, second):
        assert not result.ok
        assert result.error_type == error_type
        assert "custom runtime init" in result.logs
    if mode == "error":
        assert json.loads(first.payload) == {
            "errorType": "Runtime.InitBoom",
            "errorMessage": "init failed",
        }
    else:
        assert "exit status 3" in json.loads(first.payload)["errorMessage"]
    assert stats["cold_starts"] == 2  # each invocation started a fresh process
    assert stats["workers"] == 0


async def test_response_over_6_mb_is_function_response_size_too_large(
    rapi_runner: RunnerFactory,
) -> None:
    async with rapi_runner(code="custom_py", concurrency=1) as runner:
        big = await runner.invoke(event({"big": 6 * 1024 * 1024 + 10}))
        after = await runner.invoke(event({"echo": 1}))
    assert not big.ok
    assert big.error_type == "Function.ResponseSizeTooLarge"
    assert "exceeded maximum allowed payload size" in json.loads(big.payload)["errorMessage"]
    assert after.ok  # the runtime got a 413 and carried on
    assert json.loads(after.payload)["calls"] == 2


async def test_concurrent_invocations_get_their_own_processes(rapi_runner: RunnerFactory) -> None:
    results: list[dict[str, float]] = []
    async with rapi_runner(code="custom_py", concurrency=4) as runner:

        async def one(i: int) -> None:
            result = await runner.invoke(event({"echo": i, "sleep": 0.5}))
            assert result.ok, result.payload
            results.append(json.loads(result.payload))

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
        assert runner.statistics()["workers"] == 4
    assert sorted(r["echo"] for r in results) == [0, 1, 2, 3]
    assert len({r["pid"] for r in results}) == 4
    assert all(r["calls"] == 1 for r in results)  # no process saw two events
    # in parallel, not one after another: all four were handling their event at once
    assert max(r["t0"] for r in results) < min(r["t1"] for r in results)


async def test_max_requests_recycles_and_min_warm_starts_early(rapi_runner: RunnerFactory) -> None:
    init = ["AWS_LAMBDA_INITIALIZATION_TYPE"]
    async with rapi_runner(code="custom_py", concurrency=1, min_warm=1, max_requests=2) as runner:
        assert runner.statistics()["workers"] == 1
        pids = [json.loads((await runner.invoke(event({}))).payload)["pid"] for _ in range(2)]
        assert runner.statistics()["recycled"] == 1
        with anyio.fail_after(10):  # the replacement's init: no event for it, poll
            while runner.statistics()["idle"] != 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        warm = json.loads((await runner.invoke(event({"env": init}))).payload)
    assert pids[0] == pids[1]
    # the replacement is a min_warm process too, initialised before it was needed
    assert warm["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"


async def test_shutdown_leaves_no_process(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py", concurrency=2) as runner:
        pid = json.loads((await runner.invoke(event({}))).payload)["pid"]
        assert _alive(pid)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_memory_over_the_limit_is_out_of_memory(rapi_runner: RunnerFactory) -> None:
    async with rapi_runner(code="custom_py", memory_mb=128, concurrency=1) as runner:
        pid = json.loads((await runner.invoke(event({}))).payload)["pid"]
        hog = await runner.invoke(event({"alloc_mb": 300, "sleep": 5}))
        after = json.loads((await runner.invoke(event({}))).payload)
        stats = runner.statistics()
    assert not hog.ok
    assert hog.error_type == "Runtime.OutOfMemory"
    assert json.loads(hog.payload) == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {hog.request_id} Error: Runtime exited with error: "
        "signal: killed",
    }
    assert hog.duration_s < 4  # killed, not timed out
    assert "memory limit of 128 MB exceeded" in hog.logs
    assert after["pid"] != pid
    assert stats["out_of_memory"] == 1


async def test_runtimes_hold_no_capability(rapi_runner: RunnerFactory) -> None:
    """A daemon run as root (as in CI) starts its runtimes without any capability and
    with no_new_privs; a daemon without capabilities leaves them as they are."""
    async with rapi_runner(code="custom_py") as runner:
        pid = json.loads((await runner.invoke(event({}))).payload)["pid"]
        text = Path(f"/proc/{pid}/status").read_text()
    status = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        assert int(status[field], 16) == 0, (field, status[field])
    if _harden.holds_capabilities():
        assert status["NoNewPrivs"].strip() == "1"
