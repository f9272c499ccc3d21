"""Latency of the filewatch source: file complete -> ``ctx.invoke_async`` called.

Runs the real source (watchfiles + the real file system) in a temporary directory with a
recording context and measures, per file, the time from the moment the writer finished
(closed the file, or renamed it into place) to the moment the source handed its event to
the runtime. Scenarios:

* ``write``         written in place; waits out the quiet period (``settle``)
* ``rename-seen``   written under ``.NAME.tmp`` for ~100 ms, then renamed into place
* ``rename-quick``  written under ``.NAME.tmp`` and renamed at once (the temp file is gone
                    before the watcher reports it, so the quiet period applies)
* ``move-old``      a finished file (mtime in the past) moved in from outside the root

and, for scale, a start with 10,000 files present (``on_startup: existing``) and a restart
with the same state (nothing may fire again).

Usage: ``.venv/bin/python bench/filewatch_latency.py [--files 200] [--settle 0.5]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import structlog

from bench._procs import emit
from eventrun.abc import InvokeOutcome, Route, SourceSpec
from eventrun.runtime._clock import SystemClock
from eventrun.sources.filewatch import FileWatchSource


class _State:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    async def claim(self, key: str, ttl_s: float) -> bool:
        return self.data.setdefault(key, b"1") == b"1"

    async def release(self, key: str) -> None:
        self.data.pop(key, None)


class _Context:
    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.clock = SystemClock()
        self.state = _State()
        self.arrived: dict[str, float] = {}
        self.changed = anyio.Event()

    async def invoke(self, event: Any, *, log_tail: bool = False) -> InvokeOutcome:
        raise NotImplementedError

    async def invoke_async(self, event: Any) -> str:
        now = time.monotonic()
        for record in event["Records"]:
            self.arrived.setdefault(record["s3"]["object"]["key"], now)
        self.changed.set()
        self.changed = anyio.Event()
        return "bench"

    def add_route(self, route: Route) -> None:
        raise NotImplementedError


async def _write(root: Path, outside: Path, name: str, mode: str) -> float:
    data = os.urandom(4096)
    if mode == "write":
        (root / name).write_bytes(data)
        return time.monotonic()
    if mode == "move-old":
        src = outside / name
        src.write_bytes(data)
        os.utime(src, (time.time() - 60, time.time() - 60))
        src.rename(root / name)
        return time.monotonic()
    tmp = root / f".{name}.tmp"
    with tmp.open("wb") as f:
        f.write(data[:2048])
        f.flush()
        if mode == "rename-seen":
            await anyio.sleep(0.1)
        f.write(data[2048:])
    tmp.rename(root / name)
    return time.monotonic()


async def run(mode: str, files: int, settle: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, outside = base / "watched", base / "outside"
        root.mkdir()
        outside.mkdir()
        cfg = SimpleNamespace(path="watched", settle=settle, on_startup="none")
        spec = SourceSpec(
            kind="filewatch", name="bench", function="bench", config=cfg, config_dir=base
        )
        ctx = _Context(spec)
        done: dict[str, float] = {}
        async with anyio.create_task_group() as tg:
            await tg.start(FileWatchSource(spec).serve, ctx)
            for i in range(files):
                name = f"f{i:05d}.bin"
                done[name] = await _write(root, outside, name, mode)
                await anyio.sleep(0.01)
            with anyio.fail_after(60):
                while len(ctx.arrived) < files:
                    await ctx.changed.wait()
            tg.cancel_scope.cancel()
        return [ctx.arrived[n] - t for n, t in done.items()]


async def startup(files: int) -> tuple[float, float, int, int]:
    """Deliver ``files`` present at start (batch_size 100), then restart with the same
    state: (first start s, restart s until a new file fired, records on restart, writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "watched"
        root.mkdir()
        for i in range(files):
            (root / f"d{i % 20}").mkdir(exist_ok=True)
            (root / f"d{i % 20}" / f"f{i:05d}.bin").write_bytes(b"x" * 512)
        old = time.time() - 60
        for d in root.iterdir():
            for f in d.iterdir():
                os.utime(f, (old, old))
        cfg = SimpleNamespace(path="watched", settle=0.5, batch_size=100, on_startup="existing")
        spec = SourceSpec(
            kind="filewatch", name="bench", function="bench", config=cfg, config_dir=base
        )
        ctx = _Context(spec)
        writes = 0

        async def counting_set(key: str, value: bytes) -> None:
            nonlocal writes
            writes += 1
            ctx.state.data[key] = value

        ctx.state.set = counting_set  # type: ignore[method-assign]
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            await tg.start(FileWatchSource(spec).serve, ctx)
            with anyio.fail_after(120):
                while len(ctx.arrived) < files:
                    await ctx.changed.wait()
            tg.cancel_scope.cancel()
        first = time.monotonic() - t0
        ctx2 = _Context(spec)
        ctx2.state = ctx.state
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            await tg.start(FileWatchSource(spec).serve, ctx2)
            (root / "new.bin").write_bytes(b"new")
            with anyio.fail_after(60):
                while "new.bin" not in ctx2.arrived:
                    await ctx2.changed.wait()
            tg.cancel_scope.cancel()
        return first, time.monotonic() - t0, len(ctx2.arrived), writes


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--settle", type=float, default=0.5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"filewatch latency, {args.files} files per scenario, settle={args.settle}s")
    print(
        f"{'scenario':<14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'p50-settle':>12}{'p99-settle':>12}"
    )
    results: dict[str, dict[str, float]] = {}
    for mode in ("write", "rename-seen", "rename-quick", "move-old"):
        lat = anyio.run(run, mode, args.files, args.settle)
        p50, p99 = _pct(lat, 0.5), _pct(lat, 0.99)
        results[mode] = {
            "p50_ms": p50 * 1e3,
            "p99_ms": p99 * 1e3,
            "p50_after_settle_ms": (p50 - args.settle) * 1e3,
            "p99_after_settle_ms": (p99 - args.settle) * 1e3,
        }
        print(
            f"{mode:<14}{p50 * 1e3:>9.1f}{p99 * 1e3:>9.1f}{max(lat) * 1e3:>9.1f}"
            f"{(p50 - args.settle) * 1e3:>12.1f}{(p99 - args.settle) * 1e3:>12.1f}"
            f"   mean {statistics.fmean(lat) * 1e3:.1f}"
        )
    first, again, refired, writes = anyio.run(startup, 10_000)
    print(
        f"startup with 10,000 existing files (batch_size 100): all delivered in {first:.2f} s, "
        f"{writes} state writes; restart until a new file fired {again:.2f} s, "
        f"records on restart {refired} (only the new file)"
    )
    emit("filewatch", {"settle_s": args.settle, "results": results, "startup_10k_s": first})


if __name__ == "__main__":
    main()
