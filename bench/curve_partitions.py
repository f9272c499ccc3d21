"""Cost curve: Kafka topics of 4, 32 and 128 partitions, eventrun vs the raw aiokafka loop.

    .venv/bin/python -m bench.curve_partitions [--partitions 4 32 128] [--records 100000]

For each partition count, a fresh Tansu broker and one topic of that many partitions
holding twice ``--records`` records of 100 bytes (keys spread over every partition;
bench.kafka's ``load``), then, alternating the contenders in every repetition, each with
a fresh consumer group from the earliest offset, the time to handle and commit the first
``--records``: the plain ``getmany`` + ``commit`` loop, the eventrun runtime inline and
with one process worker (bench.kafka's contenders, same settings: batch 100, fast group
joins, the clock from the first records in). ``cpu µs/rec`` is this process's CPU time
per record, group join included: the dispatcher's side (never the broker's or a
worker's). Both should stay flat as partitions grow; the last table gives each mode's
rate and CPU at the most partitions over the fewest.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench import kafka
from bench._procs import emit, quiet_json_logs, throughput_row

MODES = ("plain", "inline", "process")


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[int, dict[str, list[float]]] = {}
    cpu: dict[int, dict[str, list[float]]] = {}
    for partitions in args.partitions:
        rates[partitions] = {mode: [] for mode in args.modes}
        cpu[partitions] = {mode: [] for mode in args.modes}
        with kafka.tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
            ends = await kafka.load(
                bootstrap, kafka.TOPIC, 2 * args.records, 100, 1000, partitions=partitions
            )
            for rep in range(args.reps):
                for mode in args.modes:
                    run = kafka.contender(mode, bootstrap, ends, args.records, Path(tmp))
                    started = time.process_time()
                    seconds = await run(f"{mode}-{rep}")
                    used = time.process_time() - started
                    cpu[partitions][mode].append(used * 1e6 / args.records)
                    rates[partitions][mode].append(args.records / seconds)
        print(f"  {partitions} partitions done", file=sys.stderr, flush=True)
    report(rates, cpu, args)


def report(
    rates: dict[int, dict[str, list[float]]],
    cpu: dict[int, dict[str, list[float]]],
    args: argparse.Namespace,
) -> None:
    load = os.getloadavg()[0]
    print(
        f"kafka partitions curve (Tansu): {args.records:,} records x 100 B per run, "
        f"{args.reps} alternating reps, cpus={os.cpu_count()} load={load:.2f}"
    )
    results: dict[str, Any] = {}
    for partitions, by_mode in rates.items():
        print(
            f"{partitions} partitions\n{'mode':<12}{'median rec/s':>14}{'min..max rec/s':>22}"
            f"{'vs plain':>10}{'(min..max)':>14}{'cpu µs/rec':>12}"
        )
        results[str(partitions)] = {}
        for mode, samples in by_mode.items():
            line, entry = throughput_row(
                mode, samples, cpu[partitions][mode], {"plain": by_mode.get("plain", [])}
            )
            results[str(partitions)][mode] = entry
            print(line)
    first, last = str(args.partitions[0]), str(args.partitions[-1])
    growth: dict[str, Any] = {}
    print(f"{last} partitions / {first}:{'rec/s':>10}{'cpu µs/rec':>12}")
    for mode in args.modes:
        rate_growth = results[last][mode]["median_rps"] / results[first][mode]["median_rps"]
        cpu_first = statistics.median(cpu[args.partitions[0]][mode])
        cpu_growth = statistics.median(cpu[args.partitions[-1]][mode]) / cpu_first
        growth[mode] = {"rps": round(rate_growth, 3), "cpu_us_per_record": round(cpu_growth, 3)}
        print(f"  {mode:<22}{rate_growth:>8.2f}x{cpu_growth:>11.2f}x")
    emit(
        "curve_partitions",
        {
            "partitions": args.partitions,
            "records": args.records,
            "reps": args.reps,
            "cpus": os.cpu_count(),
            "load": round(load, 2),
            "results": results,
            "growth": growth,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 32, 128])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
