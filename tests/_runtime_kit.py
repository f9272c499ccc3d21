"""Run a whole eventrun runtime in-process for a test: real config, workers, store, server."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime


def write_app(root: Path, yaml_text: str, files: Mapping[str, str] | None = None) -> Path:
    """Write ``eventrun.yaml`` and handler files under ``root``; return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    config = root / "eventrun.yaml"
    config.write_text(textwrap.dedent(yaml_text))
    return config


@asynccontextmanager
async def running_app(
    config_path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    async_retry_delay_s: float = 0.05,
    serve_http: bool = True,
) -> AsyncIterator[Runtime]:
    """Start the runtime (HTTP on a free port), yield it once started, then stop it
    gracefully when the block ends."""
    loaded = load_config(config_path, environ)
    runtime = Runtime(
        loaded, port=0, serve_http=serve_http, async_retry_delay_s=async_retry_delay_s
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.serve, stop)
        try:
            yield runtime
        finally:
            stop.set()
