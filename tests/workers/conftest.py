"""Shared helpers for the worker tests: settings and runners over tests/workers/apps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.workers import ProcessRunner

APPS = Path(__file__).parent / "apps"


@dataclass
class Settings:
    """Satisfies eventrun.workers.FunctionSettings, like the config layer's model."""

    handler: str = "basic.handler"
    runtime: Literal["process", "inline"] = "process"
    timeout: float = 5.0
    memory_mb: int = 256
    concurrency: int = 2
    min_warm: int = 0
    max_requests: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV


def event(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def assert_counts_down(
    ctx: dict[str, Any], *, timeout_ms: int, invoked_at: float, slept_s: float
) -> None:
    """``basic.context_fields``'s two ``get_remaining_time_in_millis()`` readings count
    down to a deadline ``timeout_ms`` after the invocation began (between ``invoked_at``
    and the first reading), by exactly the time between them on the monotonic clock
    (the handler reads it next to each; a millisecond of truncation each side)."""
    first, second = ctx["remaining"]
    first_at, second_at = ctx["remaining_at"]
    assert timeout_ms - (first_at - invoked_at) * 1000 - 2 <= first <= timeout_ms
    assert second_at - first_at >= slept_s
    assert abs((first - second) - (second_at - first_at) * 1000) <= 2, (ctx, first_at, second_at)


RunnerFactory = Callable[..., AbstractAsyncContextManager[ProcessRunner]]


@pytest.fixture
def process_runner() -> RunnerFactory:
    """``async with process_runner(handler=..., fork_server=..., hidden_env=...) as runner``."""

    @asynccontextmanager
    async def factory(
        name: str = "fn",
        *,
        fork_server: bool = True,
        hidden_env: Collection[str] = (),
        **settings: Any,
    ) -> AsyncIterator[ProcessRunner]:
        runner = ProcessRunner(
            name,
            Settings(**settings),
            config_dir=APPS,
            fork_server=fork_server,
            hidden_env=hidden_env,
        )
        async with runner:
            yield runner

    return factory
