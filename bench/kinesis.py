"""Kinesis throughput: a plain aiobotocore GetRecords loop vs the eventrun runtime, on moto.

    .venv/bin/python -m bench.kinesis [--records 4000] [--shards 4] [--reps 3] [--profile MODE]

Starts its own moto server on a free loopback port (tests/fixtures/safe_moto.py), and
in every repetition, alternating the modes, loads ``--records`` records (partition keys
spread over the shards) into a fresh stream and measures how long each contender takes
to read and handle all of them:

* ``plain``   - one aiobotocore task per shard: GetRecords(Limit 10000) back to back from
  a TRIM_HORIZON iterator (got before the clock starts) until every record was read;
  nothing else (no handler, no checkpoints, no leases);
* ``inline``  - the eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler,
  batch_size 100, poll_interval 50ms, checkpoints in the SQLite store;
* ``process`` - the same with ``runtime: process`` (4 warm workers).

The runtime is measured from ``runtime.ready`` (leases taken, iterators got, workers warm)
until every record was checkpointed (the dispatcher acknowledged all). Prints a table
(median and min..max records/s, the paired ratio to the plain loop, and ``cpu µs/rec``:
this process's CPU time per record over the timed part - moto runs in another process, so
it is the client's (plain: aiobotocore parsing GetRecords answers) or eventrun's (that
plus poller, dispatcher, events, checkpoints; the handler too for inline, not the workers
for process) cost per Kinesis-shaped record; the Kafka bench's column is over its whole
run, start-up included, amortised over 300k records) and one JSON line.

Both sides are bound by moto here: a GetRecords scans the shard's records from the start
in Python, and eventrun reads in chunks the size of its free buffer (a few batches) where
the plain loop asks for everything at once, so this measures eventrun's overhead on top of
the server's cost, not Kinesis's throughput (5 reads/s, 2 MB/s per shard).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from bench._procs import quiet_json_logs, throughput_report
from bench.sqs import CREDENTIALS, REGION, moto_server
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

MODES = ("plain", "inline", "process")
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
connections:
  kinesis:
    main:
      region: {region}
      endpoint_url: "{endpoint}"
      aws_access_key_id: bench
      aws_secret_access_key: bench
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: 4
    min_warm: {min_warm}
    triggers:
      - kinesis:
          connection: main
          stream: {stream}
          batch_size: {batch}
          poll_interval: 50ms
"""


@asynccontextmanager
async def kinesis_client(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=50)
    async with get_session().create_client(
        "kinesis", endpoint_url=endpoint, region_name=REGION, config=config, **CREDENTIALS
    ) as client:
        yield client


async def load(client: Any, shards: int, records: int) -> str:
    """A fresh stream of ``shards`` shards holding ``records`` records."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await client.create_stream(StreamName=name, ShardCount=shards)
    payload = json.dumps({"pad": "x" * 100})
    for start in range(0, records, 500):
        entries = [
            {"Data": payload.encode(), "PartitionKey": f"k{i}"}
            for i in range(start, min(records, start + 500))
        ]
        answer = await client.put_records(StreamName=name, Records=entries)
        if answer.get("FailedRecordCount"):
            raise SystemExit("PutRecords failed")
    return name


async def plain_loop(client: Any, stream: str, records: int) -> tuple[float, float]:
    """Seconds (wall, this process's CPU) for one GetRecords loop per shard to read every
    record (the iterators are got before the clock starts, as eventrun gets them before it
    is ready)."""
    shards = [s["ShardId"] for s in (await client.list_shards(StreamName=stream))["Shards"]]
    iterators = [
        (
            await client.get_shard_iterator(
                StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        for shard in shards
    ]
    read = 0

    async def reader(iterator: str | None) -> None:
        nonlocal read
        while read < records and iterator:
            got = await client.get_records(ShardIterator=iterator, Limit=10000)
            read += len(got["Records"])
            iterator = got.get("NextShardIterator")
            if not got["Records"]:
                await anyio.sleep(0.05)

    started, cpu_started = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for iterator in iterators:
            tg.start_soon(reader, iterator)
    return time.perf_counter() - started, time.process_time() - cpu_started


async def runtime_run(
    endpoint: str, stream: str, records: int, mode: str, app: Path, batch: int = 100
) -> tuple[float, float]:
    """Seconds (wall, this process's CPU) for the eventrun runtime to handle and
    checkpoint every record, from ready on."""
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = mode == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            region=REGION,
            endpoint=endpoint,
            stream=stream,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=mode,
            min_warm=0 if inline else 4,
            batch=batch,
        )
    )
    rt = Runtime(load_config(app / "eventrun.yaml"), port=0, serve_http=False)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(rt.serve, stop)
        await rt.ready.wait()
        started, cpu_started = time.perf_counter(), time.process_time()
        [source] = rt.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        with anyio.fail_after(600):
            while stats.acked < records:  # noqa: ASYNC110 - the dispatcher has no event
                await anyio.sleep(0.005)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if stats.invoke_errors:
            raise SystemExit(f"{mode}: {stats.invoke_errors} failed invocations")
        stop.set()
    return elapsed, cpu


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with kinesis_client(endpoint) as client:
            for rep in range(args.reps):
                for mode in MODES:
                    stream = await load(client, args.shards, args.records)
                    if mode == "plain":
                        seconds, cpu_s = await plain_loop(client, stream, args.records)
                    else:
                        seconds, cpu_s = await runtime_run(
                            endpoint, stream, args.records, mode, root / f"{mode}-{rep}", args.batch
                        )
                    cpu[mode].append(cpu_s * 1e6 / args.records)
                    rates[mode].append(args.records / seconds)
                    print(f"  rep {rep} {mode:<8} {args.records / seconds:9.1f} rec/s", flush=True)
            if args.profile and args.profile != "plain":
                from pyinstrument import Profiler

                stream = await load(client, args.shards, args.records)
                profiler = Profiler(async_mode="enabled")
                with profiler:
                    await runtime_run(endpoint, stream, args.records, args.profile, root / "p")
                print(profiler.output_text(unicode=True, color=False, show_all=False))
    report(rates, cpu, args)


def report(
    rates: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace
) -> None:
    """Throughput table (bench/_procs.throughput_report)."""
    throughput_report(
        f"kinesis (moto): {args.records} records over {args.shards} shards, batch {args.batch}, "
        f"{args.reps} reps",
        {
            "bench": "kinesis",
            "broker": "moto",
            "records": args.records,
            "shards": args.shards,
            "batch_size": args.batch,
            "reps": args.reps,
        },
        rates,
        cpu,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="the trigger's batch_size")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", choices=MODES, default=None)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
