"""Fire-time jitter of the cron source against the real clock.

Runs ``eventrun.sources.cron`` with a per-second schedule for N seconds and records, for
every fire, how late ``invoke_async`` was called relative to the scheduled second
(wall clock). Prints p50 / p99 / max in milliseconds::

    .venv/bin/python bench/cron_jitter.py [--seconds 60] [--schedule "rate(1 second)"] [--uvloop]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import anyio
import structlog

from bench._procs import emit
from eventrun.abc import InvokeOutcome, Route, SourceSpec
from eventrun.runtime._clock import SystemClock
from eventrun.sources.cron import create


class _DictState:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.data[key] = value

    async def claim(self, key: str, ttl_s: float) -> bool:
        if key in self.data:
            return False
        self.data[key] = b"1"
        return True

    async def release(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass
class _Context:
    spec: SourceSpec
    clock: SystemClock
    state: _DictState
    lags_ms: list[float]

    async def invoke(self, event: Any, *, log_tail: bool = False) -> InvokeOutcome:
        raise NotImplementedError

    async def invoke_async(self, event: Any) -> str:
        now = time.time()
        scheduled = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        self.lags_ms.append((now - scheduled) * 1000)
        return event["id"]  # type: ignore[no-any-return]

    def add_route(self, route: Route) -> None:
        raise NotImplementedError


async def _run(schedule: str, seconds: float) -> list[float]:
    config = SimpleNamespace(
        schedule=schedule, timezone="UTC", input=None, catch_up=0, overlap="allow"
    )
    spec = SourceSpec(kind="cron", name="bench/cron[0]", function="bench", config=config)
    ctx = _Context(spec, SystemClock(), _DictState(), [])
    source = create(spec)
    with anyio.move_on_after(seconds + 0.5):
        async with anyio.create_task_group() as tg:
            await tg.start(source.serve, ctx)
    return ctx.lags_ms


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--schedule", default="rate(1 second)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    lags = anyio.run(_run, args.schedule, args.seconds, backend_options={"use_uvloop": args.uvloop})
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"cron jitter: schedule={args.schedule!r} loop={loop} fires={len(lags)}")
    if lags:
        print(
            f"  lag_ms p50={_percentile(lags, 0.50):.3f} p99={_percentile(lags, 0.99):.3f} "
            f"max={max(lags):.3f} min={min(lags):.3f} mean={statistics.fmean(lags):.3f}"
        )
        emit(
            "cron_jitter",
            {
                "fires": len(lags),
                "loop": loop,
                "p50_ms": _percentile(lags, 0.50),
                "p99_ms": _percentile(lags, 0.99),
                "max_ms": max(lags),
            },
        )


if __name__ == "__main__":
    main()
