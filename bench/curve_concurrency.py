"""Cost curve: 1, 4, 16, 64 process workers on a handler that sleeps 10 ms, vs the ideal.

    .venv/bin/python -m bench.curve_concurrency [--levels 1 4 16 64] [--seconds 3] [--reps 3]

One daemon serves one function per level (``runtime: process``, ``concurrency`` and
``min_warm`` both the level, a handler that does ``time.sleep(0.01)``), each behind its
function URL. ``wrk`` (the load tool of bench.http, with the same helper) drives each
with as many connections as the function has workers, the levels alternating in every
repetition. A worker that does nothing but sleep can answer at most 100 requests a
second, so the ideal is ``level / 10 ms``; the ratio to it is the share of the workers'
time spent handling, not waiting on the daemon (dispatch, IPC, HTTP parsing). Both
run on the same two cores, so the ratio falls once the daemon's own work per request
times the rate fills a core: that knee is the dispatcher's capacity.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench._procs import daemon, emit, free_port, summary, write_app
from bench.http import _wrk, wrk_workdir

HANDLER = """
import time

def handler(event, context):
    time.sleep(0.01)
    return {"ok": True}
"""
SLEEP_S = 0.01


def _config(levels: list[int]) -> str:
    lines = [
        "server: {host: 127.0.0.1, port: 9000, auth: {mode: none}}",
        'store: {url: "sqlite:///state.db"}',
        "functions:",
    ]
    for level in levels:
        lines += [
            f"  c{level}:",
            "    handler: app.handler",
            "    runtime: process",
            f"    concurrency: {level}",
            f"    min_warm: {level}",
            "    triggers:",
            f"      - http: {{path: /c{level}, methods: [POST], auth: none}}",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    tmp, script = wrk_workdir("eventrun-bench-conc-")
    config = write_app(tmp / "app", _config(args.levels), {"app.py": HANDLER})
    port = free_port()
    rps: dict[int, list[float]] = {level: [] for level in args.levels}
    p50: dict[int, list[float]] = {level: [] for level in args.levels}
    p99: dict[int, list[float]] = {level: [] for level in args.levels}
    errors = 0.0
    with daemon(config, port):
        for level in args.levels:  # warm up
            _wrk(f"http://127.0.0.1:{port}/c{level}", level, 1, script)
        for _rep in range(args.reps):
            for level in args.levels:
                r = _wrk(f"http://127.0.0.1:{port}/c{level}", level, args.seconds, script)
                rps[level].append(r["rps"])
                p50[level].append(r["p50_ms"])
                p99[level].append(r["p99_ms"])
                errors += r["errors"]
    load = os.getloadavg()[0]
    print(
        f"concurrency curve: process workers on a 10 ms sleeping handler, wrk with one "
        f"connection per worker, {args.seconds:g} s x {args.reps} alternating reps, "
        f"non-2xx {errors:.0f}, cpus={os.cpu_count()} load={load:.2f}"
    )
    print(
        f"{'workers':>8}{'ideal req/s':>13}{'median req/s':>14}{'(min..max)':>18}"
        f"{'of ideal':>10}{'(min..max)':>14}{'p50 ms':>9}{'p99 ms':>9}"
    )
    results: dict[str, Any] = {}
    for level in args.levels:
        ideal = level / SLEEP_S
        s = summary(rps[level])
        share = summary([r / ideal for r in rps[level]])
        lat50, lat99 = summary(p50[level])["median"], summary(p99[level])["median"]
        spread = f"{s['min']:,.0f}..{s['max']:,.0f}"
        share_spread = f"{share['min']:.2f}..{share['max']:.2f}"
        print(
            f"{level:>8}{ideal:>13,.0f}{s['median']:>14,.0f}{spread:>18}"
            f"{share['median']:>9.2f}x{share_spread:>14}{lat50:>9.1f}{lat99:>9.1f}"
        )
        results[str(level)] = {
            "ideal_rps": ideal,
            "rps": {k: round(v, 1) for k, v in s.items()},
            "ratio_vs_ideal": round(share["median"], 3),
            "ratio_vs_ideal_min": round(share["min"], 3),
            "ratio_vs_ideal_max": round(share["max"], 3),
            "p50_ms": round(lat50, 2),
            "p99_ms": round(lat99, 2),
        }
    emit(
        "curve_concurrency",
        {
            "levels": args.levels,
            "seconds": args.seconds,
            "reps": args.reps,
            "errors": errors,
            "cpus": os.cpu_count(),
            "load": round(load, 2),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
