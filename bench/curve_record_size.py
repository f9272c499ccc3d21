"""Cost curve: records of 100 B, 100 KB and 1 MB through Kafka and Redis Streams, in MB/s.

    .venv/bin/python -m bench.curve_record_size [--sizes 100 100000 1000000] [--megabytes 60]

For each size and broker, a backlog of that size's records, then, alternating in every
repetition, each with a fresh consumer group: the raw client loop (aiokafka ``getmany`` +
``commit``; redis-py ``XREADGROUP COUNT 100`` + ``XACK``) and the eventrun runtime with one
process worker (the contenders of bench.kafka and bench.redis_streams, same settings).
Each run handles ``--megabytes`` of values (at most ``--max-records`` and at least
``--min-records`` records); the rate is in MB of values per second and the ratio is
process / raw, the median of the per-repetition ratios with its range. The runtime
hands a process worker at most 6 MB per invocation (Lambda's payload limit, in which a
Kafka value is base64), so 1 MB records go about four to a batch where the raw loop
takes 100: the ratio at 1 MB shows what copying and encoding each record costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench import kafka, redis_streams
from bench._procs import emit, paired_ratio, quiet_json_logs, summary

MODES = ("plain", "process")


def _records(size: int, args: argparse.Namespace) -> int:
    return max(args.min_records, min(args.max_records, args.megabytes * 1_000_000 // size))


async def _kafka(size: int, records: int, reps: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with kafka.tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        ends = await kafka.load(bootstrap, kafka.TOPIC, 2 * records, size, 1000)
        for rep in range(reps):
            for mode in MODES:
                run = kafka.contender(mode, bootstrap, ends, records, Path(tmp))
                seconds[mode].append(await run(f"{mode}-{rep}"))
    return seconds


async def _redis(url: str, size: int, records: int, reps: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    await redis_streams.load(url, records, size)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            for mode in MODES:
                run = redis_streams.contender(mode, url, records, Path(tmp))
                seconds[mode].append(await run(f"{mode}-{size}-{rep}"))
    return seconds


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    mbps: dict[str, dict[int, dict[str, list[float]]]] = {"kafka": {}, "redis": {}}
    with redis_streams.redis_server() as url:
        for size in args.sizes:
            records = _records(size, args)
            volume = records * size / 1e6
            for broker in args.brokers:
                started = time.perf_counter()
                if broker == "kafka":
                    seconds = await _kafka(size, records, args.reps)
                else:
                    seconds = await _redis(url, size, records, args.reps)
                mbps[broker][size] = {m: [volume / s for s in seconds[m]] for m in MODES}
                took = time.perf_counter() - started
                print(f"  {broker} {size} B x {records}: {took:.1f}s", file=sys.stderr, flush=True)
    report(mbps, args)


def report(mbps: dict[str, dict[int, dict[str, list[float]]]], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    print(
        f"record size curve: {args.megabytes} MB of values per run "
        f"({args.min_records}..{args.max_records} records), raw client loop vs eventrun "
        f"process (one worker), {args.reps} alternating reps, cpus={os.cpu_count()} "
        f"load={load:.2f}"
    )
    print(
        f"{'broker':<8}{'size B':>10}{'records':>9}{'raw MB/s':>10}{'(min..max)':>16}"
        f"{'process MB/s':>14}{'(min..max)':>16}{'ratio':>7}{'(min..max)':>14}"
    )
    results: dict[str, Any] = {}
    for broker, by_size in mbps.items():
        for size, rates in by_size.items():
            raw, proc = summary(rates["plain"]), summary(rates["process"])
            ratio, low, high = paired_ratio(rates["process"], rates["plain"])
            raw_spread = f"{raw['min']:.1f}..{raw['max']:.1f}"
            proc_spread = f"{proc['min']:.1f}..{proc['max']:.1f}"
            print(
                f"{broker:<8}{size:>10,}{_records(size, args):>9,}{raw['median']:>10.1f}"
                f"{raw_spread:>16}{proc['median']:>14.1f}{proc_spread:>16}"
                f"{ratio:>6.2f}x{f'{low:.2f}..{high:.2f}':>14}"
            )
            results.setdefault(broker, {})[str(size)] = {
                "records": _records(size, args),
                "plain_mbps": {k: round(v, 2) for k, v in raw.items()},
                "process_mbps": {k: round(v, 2) for k, v in proc.items()},
                "ratio": round(ratio, 3),
                "ratio_min": round(low, 3),
                "ratio_max": round(high, 3),
            }
    emit(
        "curve_record_size",
        {
            "sizes": args.sizes,
            "megabytes": args.megabytes,
            "reps": args.reps,
            "cpus": os.cpu_count(),
            "load": round(load, 2),
            "results": results,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000, 1_000_000])
    parser.add_argument("--megabytes", type=int, default=60)
    parser.add_argument("--min-records", type=int, default=40)
    parser.add_argument("--max-records", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=3)
    brokers = ["kafka", "redis"]
    parser.add_argument("--brokers", nargs="+", choices=brokers, default=brokers)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
