"""eventrun.workers._invocation: the Lambda-format log of one invocation."""

from __future__ import annotations

from .conftest import RunnerFactory, event


async def test_output_without_a_final_newline_still_ends_before_end(
    process_runner: RunnerFactory,
) -> None:
    async with process_runner(handler="basic.no_newline") as runner:
        result = await runner.invoke(event({}), request_id="nl")
    assert result.ok, result.logs
    lines = result.logs.splitlines()
    assert lines[:2] == ["init: basic imported", "START RequestId: nl Version: $LATEST"]
    assert lines[-3:-1] == ["partial line", "END RequestId: nl"]


async def test_init_output_without_a_final_newline_still_ends_before_start(
    process_runner: RunnerFactory,
) -> None:
    async with process_runner(handler="init_partial.handler") as runner:
        result = await runner.invoke(event({}), request_id="ip")
    assert result.ok, result.logs
    assert result.logs.splitlines()[:2] == [
        "init without newline",
        "START RequestId: ip Version: $LATEST",
    ]
