"""End-to-end latency and throughput of the example pipeline on Redis Streams.

Runs examples/pipeline (ingest -> enrich -> notify, three stages, routed by region) as an
``eventrun run`` daemon against a private redis-server, produces N orders into ``orders``
(paced at ``--rate`` per second, or all at once with ``--rate 0``) and waits until all of
them arrived in ``notifications``. Latency per order = the arrival entry's id time (the
Redis server clock at XADD into the last stream) minus the order's ``ts`` (the
producer's clock just before its XADD into the first stream); same machine, same clock.
Throughput = N / (last arrival - first produce).

    .venv/bin/python -m bench.pipeline [-n 20000] [--rate 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._procs import daemon, emit, free_port, summary, wait_port

EXAMPLE = Path(__file__).parents[1] / "examples" / "pipeline"
sys.path.insert(0, str(EXAMPLE))
from produce import orders, produce_redis  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def produce_paced(url: str, n: int, rate: float) -> float:
    """Produce ``n`` orders in chunks of 100 at ``rate``/s (0: as fast as possible);
    return the wall time of the first XADD."""
    docs = list(orders(n))
    first = time.time()
    chunk = 100
    for start in range(0, n, chunk):
        await produce_redis(url, iter(docs[start : start + chunk]))
        if rate:
            ahead = first + (start + chunk) / rate - time.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
    return first


async def collect(url: str, n: int, timeout_s: float) -> list[tuple[float, dict[str, Any]]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, decode_responses=True)
    out: list[tuple[float, dict[str, Any]]] = []
    last = "0"
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(out)} of {n} orders arrived in {timeout_s} s")
            for _name, entries in await client.xread({"notifications": last}, block=500) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    arrived = int(entry_id.partition("-")[0]) / 1000
                    out.append((arrived, json.loads(fields["data"])))
    finally:
        await client.aclose()
    return out


async def one_run(url: str, n: int, rate: float) -> dict[str, float]:
    results: dict[str, Any] = {}

    async def consume() -> None:
        results["arrivals"] = await collect(url, n, timeout_s=max(120.0, n / 200))

    task = asyncio.ensure_future(consume())
    first = await produce_paced(url, n, rate)
    await task
    arrivals: list[tuple[float, dict[str, Any]]] = results["arrivals"]
    latencies = [(arrived - doc["ts"]) * 1000 for arrived, doc in arrivals]
    ids = {doc["id"] for _a, doc in arrivals}
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies),
        "throughput_rps": n / (max(a for a, _d in arrivals) - first),
        "missing": float(n - len(ids)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="orders per run")
    parser.add_argument("--rate", type=float, default=0.0, help="orders/s (0 = unpaced)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    server = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    runs: list[dict[str, float]] = []
    try:
        wait_port(port, server)
        for i in range(args.repeat):
            url = f"redis://127.0.0.1:{port}/{i % 16}"
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "pipeline"
                shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("state.db*", "__py*"))
                env = {"REDIS_URL": url, "EVENTRUN_STORE": ""}
                with daemon(root / "eventrun.yaml", free_port(), env):
                    runs.append(asyncio.run(one_run(url, args.n, args.rate)))
            r = runs[-1]
            print(
                f"run {i + 1}: p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                f"throughput {r['throughput_rps']:,.0f} orders/s  missing {r['missing']:.0f}"
            )
    finally:
        server.terminate()
        server.wait(10)
    results = {
        key: summary([r[key] for r in runs])
        for key in ("p50_ms", "p99_ms", "mean_ms", "throughput_rps")
    }
    med = {k: v["median"] for k, v in results.items()}
    print(
        f"pipeline (3 stages, redis, n={args.n}, rate={args.rate or 'unpaced'}): "
        f"p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms, "
        f"{med['throughput_rps']:,.0f} orders/s (median of {len(runs)})"
    )
    emit("pipeline", {"n": args.n, "rate": args.rate, "broker": "redis", **results})


if __name__ == "__main__":
    main()
