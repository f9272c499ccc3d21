"""Shared helpers for the benchmarks: free ports, daemon subprocesses, statistics."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port} within {timeout_s} s")


def write_app(root: Path, yaml_text: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    config = root / "eventrun.yaml"
    config.write_text(textwrap.dedent(yaml_text))
    return config


@contextmanager
def daemon(
    config: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``eventrun run`` on ``port`` until the block ends; waits until ready (readyz)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventrun",
            "run",
            "-c",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--log-format",
            "json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=config.parent,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_port(port, proc)
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min..max) of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def emit(bench: str, results: dict[str, Any]) -> None:
    """The one machine-readable line every benchmark prints last."""
    print("BENCH_JSON " + json.dumps({"bench": bench, **results}, sort_keys=True))


def quiet_json_logs() -> None:
    """Log as a daemon would (JSON lines at info level) but into /dev/null (or the file
    ``$BENCH_LOG`` names), so the rendering cost is measured without the noise."""
    import logging

    import structlog

    from eventrun.observe._logging import json_renderer

    sink = open(os.environ.get("BENCH_LOG") or os.devnull, "w")  # noqa: SIM115 - process lifetime
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            json_renderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=True,
    )


def paired_ratio(samples: Sequence[float], base: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-repetition ratios ``samples[i] / base[i]``.

    Every repetition runs each contender back to back, so a slow spell of this VM (its
    neighbours' load moves absolute rates by 30% between minutes) hits both sides of a
    pair alike; the ratio of two medians taken from different minutes does not cancel it.
    """
    ratios = [s / b for s, b in zip(samples, base, strict=True) if b]
    if not ratios:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(ratios), min(ratios), max(ratios)


def throughput_row(
    mode: str,
    samples: Sequence[float],
    cpu_us: Sequence[float],
    baselines: dict[str, Sequence[float]],
) -> tuple[str, dict[str, Any]]:
    """One mode's line of a throughput table and its results.json entry: the median and
    spread of its rates, then for each baseline (``plain``, ``faststream``...) the paired
    ratio with its min..max, then the dispatcher CPU per record."""
    median = statistics.median(samples)
    cpu = statistics.median(cpu_us)
    line = f"{mode:<12}{median:>14,.0f}{f'{min(samples):,.0f}..{max(samples):,.0f}':>22}"
    entry: dict[str, Any] = {
        "median_rps": round(median),
        "min_rps": round(min(samples)),
        "max_rps": round(max(samples)),
    }
    for name, base in baselines.items():
        ratio, low, high = paired_ratio(samples, base) if base else (float("nan"),) * 3
        line += f"{ratio:>9.2f}x{f'{low:.2f}..{high:.2f}':>14}"
        entry[f"ratio_vs_{name}"] = round(ratio, 3)
        entry[f"ratio_vs_{name}_min"] = round(low, 3)
        entry[f"ratio_vs_{name}_max"] = round(high, 3)
    entry["cpu_us_per_record"] = round(cpu, 3)
    return line + f"{cpu:>12.2f}", entry


def throughput_report(
    title: str,
    meta: dict[str, Any],
    rates: dict[str, list[float]],
    cpu: dict[str, list[float]],
    *,
    unit: str = "rec",
) -> None:
    """The side-by-side report of a broker bench: a title line (with CPUs and load), one
    :func:`throughput_row` per mode against ``plain``, each eventrun mode against
    ``faststream`` when it ran, and the JSON line ``bench/__main__`` keeps (``meta`` first:
    ``bench`` and the run's parameters). ``cpu µs/UNIT`` is this process's CPU time per
    record: the daemon side, never the broker's, nor a process-mode worker's."""
    plain = rates.get("plain", [])
    fast = rates.get("faststream", [])
    load_avg = os.getloadavg()[0]
    print(f"{title}, cpus={os.cpu_count()} load={load_avg:.2f}")
    print(
        f"{'mode':<12}{f'median {unit}/s':>14}{f'min..max {unit}/s':>22}{'vs plain':>10}"
        f"{'(min..max)':>14}{f'cpu µs/{unit}':>12}"
    )
    results: dict[str, Any] = {}
    for mode, samples in rates.items():
        line, results[mode] = throughput_row(mode, samples, cpu[mode], {"plain": plain})
        print(line)
    versus_fast = {
        mode: paired_ratio(rates[mode], fast)
        for mode in ("inline", "process")
        if mode in rates and fast
    }
    for mode, (ratio, low, high) in versus_fast.items():
        print(f"{mode} vs faststream: {ratio:.2f}x ({low:.2f}..{high:.2f}, per repetition)")
    doc: dict[str, Any] = {
        **meta,
        "cpus": os.cpu_count(),
        "load": round(load_avg, 2),
        "python": sys.version.split()[0],
        "results": results,
    }
    if versus_fast:
        doc["ratios"] = {
            f"{mode}_vs_faststream": round(ratio, 3) for mode, (ratio, _, _) in versus_fast.items()
        }
    print(json.dumps(doc))
