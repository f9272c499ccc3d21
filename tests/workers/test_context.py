"""The context object and the environment a handler sees, in a real worker process."""

from __future__ import annotations

import json
import re
import time

import pytest

from eventrun.workers import LambdaContext
from eventrun.workers._context import FunctionInfo

from .conftest import APPS, RunnerFactory, assert_counts_down, event


async def test_every_context_field(process_runner: RunnerFactory) -> None:
    client_context = {
        "client": {"installation_id": "inst-1", "app_title": "shop"},
        "custom": {"tenant": "t1"},
        "env": {"platform": "linux"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    async with process_runner(
        "orders", handler="basic.context_fields", timeout=2.0, memory_mb=256
    ) as runner:
        invoked_at = time.monotonic()
        result = await runner.invoke(
            event({"sleep": 0.2}),
            request_id="rid-1",
            client_context=client_context,
            identity=identity,
        )
        plain = await runner.invoke(event({"sleep": 0}))
    assert result.ok, result.payload
    ctx = json.loads(result.payload)
    assert ctx["aws_request_id"] == "rid-1"
    assert ctx["function_name"] == "orders"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:orders"
    assert ctx["memory_limit_in_mb"] == "256"  # a str, as in awslambdaric
    assert ctx["log_group_name"] == "/aws/lambda/orders"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", ctx["log_stream_name"])
    assert ctx["identity"] == ["id-1", "pool-1"]
    assert ctx["client_context"] == {
        "custom": {"tenant": "t1"},
        "env": {"platform": "linux"},
        "installation_id": "inst-1",
        "app_title": "shop",
    }
    assert_counts_down(ctx, timeout_ms=2000, invoked_at=invoked_at, slept_s=0.2)
    other = json.loads(plain.payload)
    assert other["identity"] == [None, None]
    assert other["client_context"] is None
    assert other["log_stream_name"] == ctx["log_stream_name"]  # same worker, same stream


async def test_environment_cwd_and_task_root(process_runner: RunnerFactory) -> None:
    names = [
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "AWS_EXECUTION_ENV",
        "TABLE",
    ]
    async with process_runner(
        "envfn",
        handler="basic.environment",
        memory_mb=300,
        environment={"TABLE": "orders", "AWS_REGION": "ignored-reserved"},
    ) as runner:
        result = await runner.invoke(event({"names": names}))
    body = json.loads(result.payload)
    env = body["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "envfn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "300"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/envfn"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"].split("[$LATEST]")[1]
    assert env["LAMBDA_TASK_ROOT"] == str(APPS.resolve())
    assert env["_HANDLER"] == "basic.environment"
    assert re.fullmatch(r"AWS_Lambda_python3\.\d+", env["AWS_EXECUTION_ENV"])
    assert env["TABLE"] == "orders"
    assert body["cwd"] == body["sys_path_0"] == str(APPS.resolve())


async def test_output_is_captured_per_invocation_in_lambda_format(
    process_runner: RunnerFactory,
) -> None:
    async with process_runner(handler="basic.noisy", concurrency=1) as runner:
        first = await runner.invoke(event({}), request_id="req-a")
        second = await runner.invoke(event({}), request_id="req-b")
    lines = second.logs.splitlines()
    assert lines[0] == "START RequestId: req-b Version: $LATEST"
    assert lines[-2] == "END RequestId: req-b"
    assert re.fullmatch(
        r"REPORT RequestId: req-b\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 256 MB\tMax Memory Used: \d+ MB\t",
        lines[-1],
    )
    body = lines[1:-2]
    assert "hello from print" in body
    assert "to stderr" in body
    assert "raw fd write" in body  # fd-level writes (C libraries) are captured
    assert "from a subprocess" in body
    assert "via context.log" in body
    assert any(
        re.fullmatch(
            r"LambdaContext\(aws_request_id='req-b', function_name='\S+', remaining_ms=\d+\)", line
        )
        for line in body
    ), body
    assert any(re.fullmatch(r"\[INFO\]\t\S+Z\treq-b\tvia logging 42", line) for line in body)
    assert "req-a" not in second.logs  # nothing leaks from the previous invocation
    assert "Init Duration" in first.logs.splitlines()[-1]
    assert first.logs.startswith("init: basic imported\nSTART RequestId: req-a")


def test_remaining_time_never_negative() -> None:
    info = FunctionInfo(function_name="f", region="eu-west-1", memory_mb=128, log_stream_name="s")
    ctx = LambdaContext(info, "r", deadline=0.0)
    assert ctx.get_remaining_time_in_millis() == 0
    assert ctx.invoked_function_arn == "arn:aws:lambda:eu-west-1:000000000000:function:f"
    assert ctx.identity.cognito_identity_id is None
    assert ctx.client_context is None


@pytest.mark.parametrize(
    ("level", "root_level", "shown"),
    [
        ("WARN", "WARNING", ["root warning"]),
        ("warning", "WARNING", ["root warning"]),
        ("TRACE", "DEBUG", ["root debug", "root info", "root warning"]),  # no TRACE in Python
        ("FATAL", "CRITICAL", []),
        ("LOUD", "WARNING", ["root warning"]),  # not a level: Python's default, not a crash
    ],
)
async def test_aws_lambda_log_level_sets_the_root_logger_level(
    process_runner: RunnerFactory, level: str, root_level: str, shown: list[str]
) -> None:
    """Lambda's advanced logging controls set AWS_LAMBDA_LOG_LEVEL (TRACE, DEBUG, INFO,
    WARN, ERROR, FATAL): records below it are dropped by the runtime's root logger."""
    env = {"AWS_LAMBDA_LOG_LEVEL": level}
    async with process_runner(handler="basic.levels", environment=env) as runner:
        result = await runner.invoke(event({}), request_id="lv")
    assert result.ok, result.logs
    assert json.loads(result.payload) == root_level
    lines = [line.split("\t")[-1] for line in result.logs.splitlines() if "\tlv\troot " in line]
    assert lines == shown
