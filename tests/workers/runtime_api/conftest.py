"""Runners over the Runtime API apps in ./apps (real processes, real clients)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.workers import FunctionRunner, create_runner

APPS = Path(__file__).parent / "apps"


@dataclass
class Settings:
    """Satisfies eventrun.workers.FunctionSettings, plus ``code`` and ``command``."""

    handler: str = ""
    runtime: str = "provided.al2023"
    timeout: float = 5.0
    memory_mb: int = 256
    concurrency: int = 2
    min_warm: int = 0
    max_requests: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV
    code: str | None = None
    command: list[str] | None = None


def event(obj: Any) -> bytes:
    return json.dumps(obj).encode()


RunnerFactory = Callable[..., AbstractAsyncContextManager[FunctionRunner]]


@pytest.fixture
def rapi_runner() -> RunnerFactory:
    """``async with rapi_runner(code="custom_py", config_dir=..., **settings) as runner``."""

    @asynccontextmanager
    async def factory(
        name: str = "fn", *, config_dir: Path = APPS, **settings: Any
    ) -> AsyncIterator[FunctionRunner]:
        async with create_runner(name, Settings(**settings), config_dir=config_dir) as runner:
            yield runner

    return factory
