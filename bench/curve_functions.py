"""Cost curve: one daemon with 1, 10, 100, 500 HTTP functions (``min_warm: 0``).

    .venv/bin/python -m bench.curve_functions [--functions 1 10 100 500] [--reps 3]

For each size, alternating the sizes in every repetition, starts ``eventrun run`` on a
config of that many HTTP functions (one small handler module, ``min_warm: 0``, a
function URL each) and measures:

* ``start s``      - from spawning the daemon until ``/readyz`` answers 200 (polled every
  50 ms; includes the interpreter's start and imports);
* ``idle RSS MB``  - RSS of the daemon plus every process under it, 1 s after ready, with
  no invocation yet (``helpers``: how many processes that is);
* ``idle PSS MB``  - the same processes' proportional set size (shared pages split
  between their sharers: what the set really costs the machine);
* ``MB/warm worker`` - the PSS added by invoking ``--warm`` different functions once each
  (the first function 0, then 1, ...), divided by their number: what each newly used
  function's warm worker costs, with whatever helper process it needs;
* ``worker USS MB`` - median private memory of those workers (leaf processes);
* ``first call ms`` - median latency of those first invocations (each a cold start).

Prints the median and min..max over the repetitions, and the ratio of the largest size
to the smallest for each measure. Works against the public CLI and config only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._procs import daemon, emit, free_port, summary, write_app
from bench.memory import _children, _descendants, _kb, _uss_kb

HANDLER = """
def handler(event, context):
    return {"ok": True}
"""
MEASURES = (
    "start s",
    "idle RSS MB",
    "idle PSS MB",
    "helpers",
    "MB/warm worker",
    "worker USS MB",
    "first call ms",
)


def _config(functions: int) -> str:
    lines = [
        "server: {host: 127.0.0.1, port: 9000, auth: {mode: none}}",
        'store: {url: "sqlite:///state.db"}',
        "functions:",
    ]
    for i in range(functions):
        lines += [
            f"  fn{i}:",
            "    handler: app.handler",
            "    min_warm: 0",
            "    triggers:",
            f"      - http: {{path: /fn{i}, auth: none}}",
        ]
    return "\n".join(lines) + "\n"


def _tree(pid: int) -> list[int]:
    return [pid, *_descendants(pid)]


def _pss_mb(pids: list[int]) -> float:
    return sum(_kb(p, "Pss", "smaps_rollup") for p in pids) / 1024


def measure(config: Path, warm: int) -> dict[str, float]:
    out: dict[str, float] = {}
    port = free_port()
    started = time.perf_counter()
    with daemon(config, port) as proc:
        out["start s"] = time.perf_counter() - started
        time.sleep(1)
        idle = _tree(proc.pid)
        out["helpers"] = len(idle) - 1
        out["idle RSS MB"] = sum(_kb(p, "VmRSS") for p in idle) / 1024
        out["idle PSS MB"] = _pss_mb(idle)
        calls = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for i in range(warm):
                t = time.perf_counter()
                client.post(f"/fn{i}", json={}).raise_for_status()
                calls.append((time.perf_counter() - t) * 1000)
        time.sleep(0.5)
        busy = _tree(proc.pid)
        out["MB/warm worker"] = (_pss_mb(busy) - out["idle PSS MB"]) / warm
        workers = [p for p in busy if p not in idle and not _children(p)]
        out["worker USS MB"] = statistics.median(_uss_kb(p) / 1024 for p in workers)
        out["first call ms"] = statistics.median(calls)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--functions", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warm", type=int, default=8, help="functions invoked (at most)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eventrun-bench-fns-"))
    configs = {
        n: write_app(tmp / f"fns{n}", _config(n), {"app.py": HANDLER}) for n in args.functions
    }
    samples: dict[int, dict[str, list[float]]] = {n: {m: [] for m in MEASURES} for n in configs}
    for _rep in range(args.reps):
        for n, config in configs.items():
            for key, value in measure(config, min(n, args.warm)).items():
                samples[n][key].append(value)
    load = os.getloadavg()[0]
    sizes = list(configs)
    print(
        f"functions curve: {', '.join(map(str, sizes))} HTTP functions (min_warm 0), "
        f"{args.reps} alternating reps, up to {args.warm} functions invoked once each, "
        f"cpus={os.cpu_count()} load={load:.2f}"
    )
    print("median (min..max) per size; last column: largest size / smallest")
    print(f"{'measure':<16}" + "".join(f"{n:>22,}" for n in sizes) + f"{'growth':>9}")
    results: dict[str, Any] = {}
    growth: dict[str, float] = {}
    for key in MEASURES:
        line = f"{key:<16}"
        for n in sizes:
            s = summary(samples[n][key])
            line += f"{s['median']:.1f} ({s['min']:.1f}..{s['max']:.1f})".rjust(22)
            results.setdefault(key, {})[str(n)] = {k: round(v, 3) for k, v in s.items()}
        first = statistics.median(samples[sizes[0]][key])
        last = statistics.median(samples[sizes[-1]][key])
        if first:
            growth[key] = round(last / first, 3)
            line += f"{growth[key]:>8.2f}x"
        print(line)
    emit(
        "curve_functions",
        {
            "functions": sizes,
            "reps": args.reps,
            "warm": args.warm,
            "cpus": os.cpu_count(),
            "load": round(load, 2),
            "results": results,
            "growth": growth,
        },
    )


if __name__ == "__main__":
    main()
