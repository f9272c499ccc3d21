"""Cost curve: store operations as the queues grow, SQLite and Redis side by side.

    .venv/bin/python -m bench.curve_store [--depths 1000 10000 100000 1000000] [--reps 3]

Fills one queue of asynchronous invocations (``async:fn``, 100-byte events) and one DLQ
(``local:fn-failed``, 300-byte stream failure records) of each store to each depth in
turn (bulk ``put`` of 5,000 payloads per call through the public API, so the fill grows
the same queues from one depth to the next), then, at every depth and in every
repetition, alternating the backends, times on the full queues:

* ``enqueue`` - ``put`` of one invocation (one committed write);
* ``lease``   - ``lease(limit=1)`` of the oldest available invocation;
* ``ack``     - ``ack`` of one leased invocation (so the depth stays where it is);
* ``dlq list``- ``dlq.list_page(limit=100)``, what ``eventrun dlq list --limit 100`` runs;
* ``depth``   - ``depth`` of the async queue (the metrics' queue-depth refresh, every 2 s);
* ``open``    - entering and leaving the store (``eventrun dlq`` opens it per command).

Prints, per backend, each operation's median rate (and min..max over the repetitions)
at each depth, and the ratio of the rate at the deepest level to the shallowest: about
1 (flat) or a few tenths (logarithmic) is the goal; 10^-3 would mean linear. The
Redis server is a throw-away one (bench.redis_streams.redis_server); SQLite is a file in
a temporary directory with the default settings (WAL, synchronous NORMAL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from bench._procs import emit, quiet_json_logs
from bench.redis_streams import redis_server
from eventrun.store import QueueLimits, Store, dlq, open_store

ASYNC_QUEUE = "async:fn"
DLQ = "local:fn-failed"
FILL_BATCH = 5000
OPS = ("enqueue", "lease", "ack", "dlq list", "depth", "open")
EVENT = json.dumps({"order": 1, "pad": "x" * 70}).encode()
FAILURE = json.dumps(
    {
        "requestContext": {
            "requestId": "5f0c2a5e-0000-4000-8000-000000000000",
            "functionArn": "arn:aws:lambda:local:000000000000:function:fn",
            "condition": "RetryAttemptsExhausted",
        },
        "payload": {"records": {"orders-0": [{"offset": 1, "value": "eA=="}]}},
        "pad": "x" * 60,
    }
).encode()


async def fill(store: Store, queue: str, payload: bytes, count: int) -> None:
    """Bulk-put ``count`` entries in batches of FILL_BATCH (one transaction / script each)."""
    while count > 0:
        n = min(FILL_BATCH, count)
        await store.put(queue, [payload] * n)
        count -= n


async def rate(op: Callable[[], Awaitable[Any]], times: int) -> float:
    """Calls per second of ``op`` over ``times`` calls."""
    started = time.perf_counter()
    for _ in range(times):
        await op()
    return times / (time.perf_counter() - started)


async def measure(store: Store, url: str, ops: int) -> dict[str, float]:
    """One repetition of every operation at the current depth; leaves the depth as it was."""
    out: dict[str, float] = {}
    out["enqueue"] = await rate(lambda: store.put(ASYNC_QUEUE, [EVENT]), ops)
    leased: list[str] = []

    async def lease_one() -> None:
        found = await store.lease(ASYNC_QUEUE, now=time.time(), limit=1, lease_s=600)
        leased.extend(entry.id for entry in found)

    out["lease"] = await rate(lease_one, ops)
    pending = iter(leased)
    out["ack"] = await rate(lambda: store.ack(ASYNC_QUEUE, [next(pending)]), len(leased))
    lists = max(3, ops // 20)
    out["dlq list"] = await rate(lambda: dlq.list_page(store, DLQ, limit=100), lists)
    out["depth"] = await rate(lambda: store.depth(ASYNC_QUEUE), lists)

    async def reopen() -> None:
        async with open_store(url, config_dir=Path.cwd(), limits=LIMITS):
            pass

    out["open"] = await rate(reopen, 3)
    return out


LIMITS = QueueLimits(max_depth=10**8, max_bytes=1 << 40)


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    fill_s: dict[str, dict[str, float]] = {}
    with redis_server() as redis_url, tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/state.db", "redis": redis_url}
        stores = {
            name: open_store(url, config_dir=Path(tmp), limits=LIMITS) for name, url in urls.items()
        }
        for store in stores.values():
            await store.__aenter__()
        try:
            have = 0
            for depth in args.depths:
                key = str(depth)
                for name, store in stores.items():
                    started = time.perf_counter()
                    await fill(store, ASYNC_QUEUE, EVENT, depth - have)
                    await fill(store, DLQ, FAILURE, depth - have)
                    fill_s.setdefault(name, {})[key] = round(time.perf_counter() - started, 2)
                have = depth
                for _rep in range(args.reps):
                    for name, store in stores.items():
                        for op, value in (await measure(store, urls[name], args.ops)).items():
                            cell = results.setdefault(name, {}).setdefault(op, {})
                            cell.setdefault(key, []).append(value)
                print(f"  depth {depth:,}: filled and measured", flush=True)
        finally:
            for store in stores.values():
                await store.__aexit__(None, None, None)
    report(results, fill_s, args)


def report(
    results: dict[str, dict[str, dict[str, list[float]]]],
    fill_s: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    load = os.getloadavg()[0]
    depths = [str(d) for d in args.depths]
    print(
        f"store depth curve: async queue and DLQ at {', '.join(f'{d:,}' for d in args.depths)} "
        f"entries, {args.reps} alternating reps, {args.ops} ops per rep, "
        f"cpus={os.cpu_count()} load={load:.2f}"
    )
    doc: dict[str, Any] = {
        "depths": args.depths,
        "reps": args.reps,
        "ops": args.ops,
        "cpus": os.cpu_count(),
        "load": round(load, 2),
        "fill_seconds": fill_s,
        "results": {},
        "growth": {},
    }
    for name, per_op in results.items():
        print(f"{name}: median ops/s (min..max); last column: deepest / shallowest")
        print(f"{'op':<10}" + "".join(f"{int(d):>24,}" for d in depths) + f"{'growth':>9}")
        for op in OPS:
            cells = per_op[op]
            line = f"{op:<10}"
            for d in depths:
                v = cells[d]
                line += f"{statistics.median(v):>9,.0f} ({min(v):,.0f}..{max(v):,.0f})".rjust(24)
            growth = statistics.median(cells[depths[-1]]) / statistics.median(cells[depths[0]])
            print(f"{line}{growth:>8.2f}x")
            doc["results"].setdefault(name, {})[op] = {
                d: {
                    "median": round(statistics.median(cells[d]), 1),
                    "min": round(min(cells[d]), 1),
                    "max": round(max(cells[d]), 1),
                }
                for d in depths
            }
            doc["growth"].setdefault(name, {})[op] = round(growth, 3)
        fills = ", ".join(f"{int(d):,}: {s:.1f}s" for d, s in fill_s[name].items())
        print(f"  fill time (both queues, up to each depth): {fills}")
    emit("curve_store", doc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[10**3, 10**4, 10**5, 10**6])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ops", type=int, default=200)
    anyio.run(main, parser.parse_args())
