"""NATS JetStream throughput: a plain nats-py fetch + ack loop, FastStream's pull
subscriber and the eventrun runtime with the ``nats`` plugin, on the same server.

    .venv/bin/python -m bench.nats [--messages 100000] [--subjects 4] [--reps 3]

Starts its own ``nats-server -js`` on a free loopback port with a store directory of its
own, loads ``--messages`` messages of ``--value-bytes`` bytes round-robin over
``--subjects`` subjects of one stream, then measures, alternating the modes in every
repetition, each with a fresh durable pull consumer (explicit acks) on the same data:

* ``plain``      - nats-py ``fetch(100)`` + ``ack()`` per message, nothing else;
* ``faststream`` - FastStream's pull subscriber (``PullSub(batch_size=100, batch=True)``,
  acks after the handler), a trivial ``async def`` handler, its logger at info to /dev/null;
* ``inline``     - the eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler;
* ``process``    - the eventrun runtime, ``runtime: process`` (one worker), a trivial handler.

The runtime's ``nats`` trigger keeps one ordered lane per subject (``batch_size: 100``):
``--subjects`` is how many batches can be in flight at once. Each mode is timed from the
moment it is consuming until the server reports the consumer with nothing pending and
nothing unacknowledged. Prints a table and one JSON line, like bench/redis_streams.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import nats
from nats.js import api

from bench._procs import (
    free_port,
    quiet_json_logs,
    throughput_report,
    wait_port,
)
from bench.redis_streams import _devnull_logger
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

STREAM = "BENCH"
MODES = ("plain", "faststream", "inline", "process")
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
connections:
  nats: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: {concurrency}
    min_warm: {min_warm}
    triggers:
      - nats:
          connection: main
          stream: {stream}
          consumer: {consumer}
          batch_size: 100
          maximum_batching_window: 0
"""


@contextmanager
def nats_server() -> Iterator[str]:
    """A throw-away ``nats-server -js``; yields its URL."""
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise SystemExit("nats-server not found: apt-get install nats-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        args = [binary, "-js", "-p", str(port), "-a", "127.0.0.1", "-sd", store]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            yield f"nats://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


async def load(url: str, messages: int, subjects: int, value_bytes: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[f"{STREAM}.>"])
        value = b"x" * value_bytes
        pending = []
        for i in range(messages):
            pending.append(await js.publish_async(f"{STREAM}.s{i % subjects}", value))
            if len(pending) >= 1000:
                for future in pending:
                    await future
                pending = []
        for future in pending:
            await future
    finally:
        await nc.close()


async def drained(url: str, consumer: str) -> None:
    """Until ``consumer`` has nothing left to deliver and nothing unacknowledged."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        while True:
            info = await js.consumer_info(STREAM, consumer)
            if not info.num_pending and not info.num_ack_pending:
                return
            await anyio.sleep(0.002)
    finally:
        await nc.close()


async def plain_loop(url: str, consumer: str, messages: int) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=20000)
        sub = await js.pull_subscribe(f"{STREAM}.>", consumer, stream=STREAM, config=config)
        started = time.perf_counter()
        done = 0
        while done < messages:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
            done += len(msgs)
        await nc.flush()
        await drained(url, consumer)
        return time.perf_counter() - started
    finally:
        await nc.close()


async def faststream_run(url: str, consumer: str, messages: int) -> float:
    from faststream.nats import JStream, NatsBroker, PullSub

    broker = NatsBroker(url, logger=_devnull_logger(f"bench.faststream.{consumer}"))
    done = anyio.Event()
    seen = 0

    @broker.subscriber(
        f"{STREAM}.>",
        stream=JStream(STREAM, declare=False),
        durable=consumer,
        pull_sub=PullSub(batch_size=100, batch=True, timeout=1.0),
    )
    async def handle(msgs: list[bytes]) -> None:
        nonlocal seen
        seen += len(msgs)
        if seen >= messages:
            done.set()

    async with broker:
        started = time.perf_counter()
        await broker.start()
        with anyio.fail_after(600):
            await done.wait()
            await drained(url, consumer)
        return time.perf_counter() - started


async def runtime_run(url: str, consumer: str, messages: int, runtime: str, root: Path) -> float:
    app = root / consumer
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = runtime == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            url=url,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=runtime,
            concurrency=4 if inline else 1,
            min_warm=0 if inline else 1,
            stream=STREAM,
            consumer=consumer,
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
            while stats.acked < messages:  # noqa: ASYNC110 - a counter, no event to wait on
                await anyio.sleep(0.002)
            await drained(url, consumer)
        elapsed = time.perf_counter() - started
        if stats.invoke_errors:
            raise SystemExit(f"{runtime}: {stats.invoke_errors} failed invocations")
        stop.set()
    return elapsed


def contender(mode: str, url: str, messages: int, root: Path) -> Callable[[str], Awaitable[float]]:
    if mode == "plain":
        return lambda consumer: plain_loop(url, consumer, messages)
    if mode == "faststream":
        return lambda consumer: faststream_run(url, consumer, messages)
    return lambda consumer: runtime_run(url, consumer, messages, mode, root)


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in args.modes}
    with nats_server() as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await load(url, args.messages, args.subjects, args.value_bytes)
        for rep in range(args.reps):
            for mode in args.modes:
                cpu_started = time.process_time()
                seconds = await contender(mode, url, args.messages, root)(f"{mode}-{rep}")
                cpu[mode].append((time.process_time() - cpu_started) * 1e6 / args.messages)
                rates[mode].append(args.messages / seconds)
    report(rates, cpu, args)


def report(
    rates: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace
) -> None:
    """Throughput table (bench/_procs.throughput_report)."""
    throughput_report(
        f"nats jetstream: {args.messages} messages x {args.value_bytes} B over"
        f" {args.subjects} subjects, {args.reps} reps",
        {
            "bench": "nats",
            "messages": args.messages,
            "subjects": args.subjects,
            "value_bytes": args.value_bytes,
            "reps": args.reps,
        },
        rates,
        cpu,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
