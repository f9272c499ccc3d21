"""SQS throughput: a plain aiobotocore receive/delete loop vs the eventrun runtime, on moto.

    .venv/bin/python -m bench.sqs [--messages 300] [--concurrency 4] [--reps 3] [--profile MODE]

Starts its own moto server on a free loopback port (with moto's unlocked queue mutations
made thread-safe by tests/fixtures/safe_moto.py), creates one standard queue, and
measures, alternating the modes in every repetition, each draining the same
``--messages`` message bodies (loaded again before every run) with batches of 10 and the
same concurrency:

* ``plain``   - ``--concurrency`` aiobotocore tasks, each a ReceiveMessage(10, 1 s long
  poll) + DeleteMessageBatch loop, nothing else;
* ``inline``  - the eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler,
  ``maximum_concurrency`` and function ``concurrency`` = ``--concurrency``;
* ``process`` - the same with ``runtime: process`` (``--concurrency`` warm workers).

The runtime is measured from ``runtime.ready`` (the poller connected; workers are warm)
until every message was deleted (the dispatcher acknowledged all, and moto reports the
queue empty); logs render as JSON lines to /dev/null at level info, as a daemon's would.
Prints a table (median and min..max messages/s, ratio to the plain loop's median) and one
JSON line. ``--profile MODE`` runs that mode once more under pyinstrument.

moto is the bottleneck here (every receive and delete scans the whole queue, and it
serves requests from Python threads under one GIL), so this measures how much overhead
eventrun adds on top of the broker's own cost, not SQS's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio

from bench._procs import free_port, quiet_json_logs
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime
from tests.fixtures.moto import MotoServer

MODES = ("plain", "inline", "process")
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
connections:
  sqs:
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
    concurrency: {concurrency}
    min_warm: {min_warm}
    triggers:
      - sqs:
          connection: main
          queue_url: "{queue_url}"
          batch_size: 10
          maximum_concurrency: {concurrency}
"""


# -- the moto server -------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """A throw-away moto server (the test harness's launcher); yields its endpoint URL."""
    with tempfile.TemporaryDirectory(prefix="bench-moto-") as tmp:
        server = MotoServer(free_port(), Path(tmp) / "moto.log")
        server.start()
        try:
            yield server.endpoint_url
        finally:
            server.stop()


@asynccontextmanager
async def sqs_client(endpoint: str) -> AsyncIterator[Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=50)
    async with get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name=REGION, config=config, **CREDENTIALS
    ) as client:
        yield client


async def load(client: Any, queue_url: str, bodies: list[str]) -> None:
    """Send ``bodies`` (SendMessageBatch, 8 at a time) into an empty queue."""
    limiter = anyio.CapacityLimiter(8)

    async def chunk(start: int) -> None:
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        async with limiter:
            response = await client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise SystemExit(f"SendMessageBatch failed: {response['Failed'][:1]}")

    async with anyio.create_task_group() as tg:
        for start in range(0, len(bodies), 10):
            tg.start_soon(chunk, start)
    if await depth(client, queue_url) != len(bodies):
        raise SystemExit("the queue does not hold exactly the loaded messages")


async def depth(client: Any, queue_url: str) -> int:
    response = await client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return sum(int(v) for v in response["Attributes"].values())


# -- the three contenders --------------------------------------------------------------


async def plain_loop(client: Any, queue_url: str, messages: int, concurrency: int) -> float:
    """Seconds for ``concurrency`` receive(10)/delete-batch loops to delete everything."""
    deleted = 0

    async def consumer() -> None:
        nonlocal deleted
        while deleted < messages:
            response = await client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            got = response.get("Messages", [])
            if not got:
                continue
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ]
            result = await client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            deleted += len(result.get("Successful", []))

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(consumer)
    return time.perf_counter() - started


async def runtime_run(
    client: Any,
    endpoint: str,
    queue_url: str,
    messages: int,
    concurrency: int,
    mode: str,
    app: Path,
) -> float:
    """Seconds for the eventrun runtime to handle and delete every message."""
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = mode == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            region=REGION,
            endpoint=endpoint,
            queue_url=queue_url,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=mode,
            concurrency=concurrency,
            min_warm=0 if inline else concurrency,
        )
    )
    rt = Runtime(load_config(app / "eventrun.yaml"), port=0, serve_http=False)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(rt.serve, stop)
        await rt.ready.wait()
        started = time.perf_counter()
        [source] = rt.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        with anyio.fail_after(600):
            while stats.acked < messages:  # noqa: ASYNC110 - the dispatcher has no event
                await anyio.sleep(0.005)
        elapsed = time.perf_counter() - started
        if stats.invoke_errors:
            raise SystemExit(f"{mode}: {stats.invoke_errors} failed invocations")
        stop.set()
    if await depth(client, queue_url):
        raise SystemExit(f"{mode}: messages left in the queue after the run")
    return elapsed


# -- driver ----------------------------------------------------------------------------


def contender(
    mode: str, client: Any, endpoint: str, queue_url: str, args: argparse.Namespace, root: Path
) -> Callable[[str], Awaitable[float]]:
    if mode == "plain":
        return lambda _run: plain_loop(client, queue_url, args.messages, args.concurrency)
    return lambda run: runtime_run(
        client, endpoint, queue_url, args.messages, args.concurrency, mode, root / run
    )


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    bodies = [json.dumps({"n": i, "pad": "x" * 100}) for i in range(args.messages)]
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with sqs_client(endpoint) as client:
            queue_url = (await client.create_queue(QueueName="bench"))["QueueUrl"]
            for rep in range(args.reps):
                for mode in MODES:
                    await load(client, queue_url, bodies)
                    run = contender(mode, client, endpoint, queue_url, args, root)
                    seconds = await run(f"{mode}-{rep}")
                    rates[mode].append(args.messages / seconds)
                    print(f"  rep {rep} {mode:<8} {args.messages / seconds:8.1f} msg/s", flush=True)
            if args.profile:
                await load(client, queue_url, bodies)
                await profile(contender(args.profile, client, endpoint, queue_url, args, root))
    report(rates, args)


async def profile(run: Callable[[str], Awaitable[float]]) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    with profiler:
        await run("profile")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> None:
    base = statistics.median(rates["plain"])
    load_avg = os.getloadavg()[0]
    print(
        f"sqs (moto): {args.messages} messages, batch 10, concurrency {args.concurrency}, "
        f"{args.reps} reps, cpus={os.cpu_count()} load={load_avg:.2f}"
    )
    print(f"{'mode':<10}{'median msg/s':>14}{'min..max msg/s':>20}{'vs plain':>10}")
    results = {}
    for mode, samples in rates.items():
        median = statistics.median(samples)
        spread = f"{min(samples):,.0f}..{max(samples):,.0f}"
        print(f"{mode:<10}{median:>14,.1f}{spread:>20}{median / base:>9.2f}x")
        results[mode] = {
            "median_mps": round(median, 1),
            "min_mps": round(min(samples), 1),
            "max_mps": round(max(samples), 1),
            "ratio_vs_plain": round(median / base, 3),
        }
    doc = {
        "bench": "sqs",
        "broker": "moto",
        "messages": args.messages,
        "batch_size": 10,
        "concurrency": args.concurrency,
        "reps": args.reps,
        "cpus": os.cpu_count(),
        "load": round(load_avg, 2),
        "python": sys.version.split()[0],
        "results": results,
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", choices=MODES, default=None)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
