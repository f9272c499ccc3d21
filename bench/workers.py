"""Worker pool micro-benchmark: cold start and warm round trip (SPEC §4 targets).

    .venv/bin/python bench/workers.py [--warm N] [--cold N] [--functions N]

Cold start = spawn (fork from the zygote, or a fresh interpreter) + handler import,
as reported in ``InvokeResult.init_duration_s``. Warm round trip = ``await
runner.invoke()`` of a trivial handler, measured by the caller, structlog rendering
JSON lines to /dev/null (what a daemon with JSON logs pays).

First invocation of a never-invoked function = ``await runner.invoke()`` of each of
``--functions`` distinct functions (``min_warm: 0``, a small module of their own each),
measured by the caller: with the daemon's one zygote (it is up before the first
function is invoked, as in a daemon), and with a template per function started by its
first invocation (the design before the zygote).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import anyio
import structlog

from bench._procs import emit
from eventrun.config import DEFAULT_INHERIT_ENV
from eventrun.workers import InlineRunner, ProcessRunner, function_environment, open_zygote

HANDLER = """
def handler(event, context):
    return {"ok": True}

async def ahandler(event, context):
    return {"ok": True}
"""


@dataclass
class Settings:
    handler: str = "bench_app.handler"
    runtime: Literal["process", "inline"] = "process"
    timeout: float = 30.0
    memory_mb: int = 512
    concurrency: int = 1
    min_warm: int = 0
    max_requests: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


RESULTS: dict[str, dict[str, float]] = {}


def line(label: str, samples: list[float], unit: float, unit_name: str) -> None:
    RESULTS[label] = {
        f"p50_{unit_name}": pct(samples, 0.5) * unit,
        f"p99_{unit_name}": pct(samples, 0.99) * unit,
    }
    print(
        f"{label:<34} n={len(samples):<5} p50={pct(samples, 0.5) * unit:8.3f} {unit_name}"
        f"  p99={pct(samples, 0.99) * unit:8.3f} {unit_name}"
        f"  mean={statistics.fmean(samples) * unit:8.3f} {unit_name}"
    )


async def cold(root: Path, n: int, fork_server: bool) -> list[float]:
    settings = Settings(max_requests=1)  # every invocation gets a brand-new worker
    samples: list[float] = []
    async with ProcessRunner("bench", settings, config_dir=root, fork_server=fork_server) as r:
        for _ in range(n):
            result = await r.invoke(b"{}")
            if not result.ok or result.init_duration_s is None:
                raise SystemExit(f"unexpected result: {result}")
            samples.append(result.init_duration_s)
    return samples


async def first_invocations(root: Path, n: int, zygote: bool) -> list[float]:
    """Each of ``n`` functions invoked once, in turn, none ever invoked before."""
    functions = []
    for i in range(n):
        code = root / f"{'z' if zygote else 't'}{i}"
        code.mkdir()
        (code / f"fn{i}.py").write_text(HANDLER)
        functions.append((f"fn{i}", Settings(handler=f"fn{i}.handler"), code))
    envs = [function_environment(name, s, code, "us-east-1") for name, s, code in functions]
    samples: list[float] = []
    async with AsyncExitStack() as stack:
        shared = await stack.enter_async_context(open_zygote(envs)) if zygote else None
        runners = [
            await stack.enter_async_context(
                ProcessRunner(name, settings, config_dir=code, zygote=shared)
            )
            for name, settings, code in functions
        ]
        for runner in runners:
            started = time.perf_counter()
            result = await runner.invoke(b"{}")
            samples.append(time.perf_counter() - started)
            if not result.ok or result.init_duration_s is None:
                raise SystemExit(f"unexpected result: {result}")
    return samples


async def warm(root: Path, n: int, fork_server: bool) -> list[float]:
    samples: list[float] = []
    settings = Settings(min_warm=1)
    async with ProcessRunner("bench", settings, config_dir=root, fork_server=fork_server) as r:
        for _ in range(200):
            await r.invoke(b"{}")
        for _ in range(n):
            started = time.perf_counter()
            await r.invoke(b'{"k": 1}')
            samples.append(time.perf_counter() - started)
    return samples


async def warm_inline(root: Path, n: int) -> list[float]:
    samples: list[float] = []
    settings = Settings(handler="bench_app.ahandler", runtime="inline")
    async with InlineRunner("bench", settings, config_dir=root) as r:
        for _ in range(n):
            started = time.perf_counter()
            await r.invoke(b'{"k": 1}')
            samples.append(time.perf_counter() - started)
    return samples


async def main(args: argparse.Namespace) -> None:
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 - lives as long as the process
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(devnull),
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bench_app.py").write_text(HANDLER)
        print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
        first = await first_invocations(root, args.functions, True)
        line("first invocation, zygote", first, 1e3, "ms")
        first = await first_invocations(root, args.functions, False)
        line("first invocation, template per fn", first, 1e3, "ms")
        line("cold start, fork server", await cold(root, args.cold, True), 1e3, "ms")
        line("cold start, fresh interpreter", await cold(root, args.cold // 2, False), 1e3, "ms")
        line("warm round trip, fork server", await warm(root, args.warm, True), 1e3, "ms")
        line("warm round trip, fresh interpreter", await warm(root, args.warm, False), 1e3, "ms")
        line("warm call, inline (async handler)", await warm_inline(root, args.warm), 1e3, "ms")
    emit("workers", {"results": RESULTS})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5000)
    parser.add_argument("--cold", type=int, default=40)
    parser.add_argument("--functions", type=int, default=48)
    anyio.run(main, parser.parse_args())
