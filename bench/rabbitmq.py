"""RabbitMQ throughput: a plain aio-pika consume + ack loop vs FastStream vs the
eventrun runtime with the eventrun-rabbitmq plugin.

    .venv/bin/python -m bench.rabbitmq [--messages 50000] [--reps 3] [--profile MODE]

Starts its own ``rabbitmq-server`` (the plugin tests' launcher: own node name, ports and
data directory), and for every mode of every repetition loads ``--messages`` messages of
``--value-bytes`` bytes into a fresh queue, then measures until every one is acked:

* ``plain``      - aio-pika ``async for message in queue.iterator(): await message.ack()``,
  prefetch 400, nothing else;
* ``faststream`` - FastStream's RabbitMQ subscriber (one message per handler call, which
  is all it offers for RabbitMQ), prefetch 400, a trivial ``async def`` handler, its
  logger at info level writing to /dev/null;
* ``inline``     - the eventrun runtime, ``runtime: inline``, a trivial ``async def``;
* ``process``    - the eventrun runtime, ``runtime: process`` (one worker), a trivial
  handler; batch_size 100 (Lambda's default) and prefetch 400 in both runtime modes.

The runtime is measured from ``runtime.ready`` until the dispatcher handed the last ack
to the poller (the broker has it once ``basic.ack`` is written); logs render as JSON
lines to /dev/null at level info. Prints a table (median and min..max messages/s; ratio
to the plain loop: the median of the per-repetition ratios) and one JSON line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiormq
import anyio
from pamqp import commands as spec

from bench._procs import quiet_json_logs, throughput_report
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "eventrun-rabbitmq" / "tests"))
from rabbitmq_server import RabbitServer  # the plugin tests' launcher

MODES = ("plain", "faststream", "inline", "process")
PREFETCH = 400
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
connections:
  rabbitmq: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: 1
    min_warm: {min_warm}
    triggers:
      - rabbitmq:
          connection: main
          queue: {queue}
          batch_size: 100
          prefetch: {prefetch}
"""


async def load(url: str, queue: str, messages: int, value_bytes: int) -> None:
    """Declare ``queue`` and publish ``messages`` transient messages (confirmed)."""
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        await ch.queue_declare(queue, durable=False)
        body = b"x" * value_bytes
        props = spec.Basic.Properties(delivery_mode=1)

        async def one() -> None:
            await ch.basic_publish(body, routing_key=queue, properties=props)

        for start in range(0, messages, 1000):
            async with anyio.create_task_group() as tg:
                for _ in range(min(1000, messages - start)):
                    tg.start_soon(one)
        declared = await ch.queue_declare(queue, passive=True)
        assert declared.message_count == messages, declared
    finally:
        await conn.close()


# -- the contenders --------------------------------------------------------------------


async def plain_loop(url: str, queue: str, messages: int) -> float:
    """Seconds for aio-pika's consume + ack loop to take every message."""
    import aio_pika

    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        q = await channel.get_queue(queue)
        done = 0
        started = time.perf_counter()
        async with q.iterator() as it:
            async for message in it:
                await message.ack()
                done += 1
                if done >= messages:
                    break
        return time.perf_counter() - started
    finally:
        await conn.close()


def _devnull_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115
    return logger


async def faststream_run(url: str, queue: str, messages: int) -> float:
    """Seconds for FastStream's subscriber to handle and ack every message."""
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    broker = RabbitBroker(url, logger=_devnull_logger(f"bench.faststream.{queue}"))
    done = anyio.Event()
    seen = 0

    @broker.subscriber(RabbitQueue(queue, declare=False), channel=Channel(prefetch_count=PREFETCH))
    async def handle(body: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen >= messages:
            done.set()

    async with broker:
        started = time.perf_counter()
        await broker.start()
        with anyio.fail_after(600):
            await done.wait()
        elapsed = time.perf_counter() - started
    return elapsed


async def runtime_run(url: str, queue: str, messages: int, runtime: str, root: Path) -> float:
    app = root / queue
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = runtime == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            url=url,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=runtime,
            min_warm=0 if inline else 1,
            queue=queue,
            prefetch=PREFETCH,
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
        elapsed = time.perf_counter() - started
        if stats.invoke_errors:
            raise SystemExit(f"{runtime}: {stats.invoke_errors} failed invocations")
        stop.set()
    return elapsed


def contender(mode: str, url: str, n: int, root: Path) -> Callable[[str], Awaitable[float]]:
    if mode == "plain":
        return lambda queue: plain_loop(url, queue, n)
    if mode == "faststream":
        return lambda queue: faststream_run(url, queue, n)
    return lambda queue: runtime_run(url, queue, n, mode, root)


# -- driver ------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in args.modes}
    server = RabbitServer()
    try:
        await anyio.to_thread.run_sync(server.start)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for rep in range(args.reps):
                for mode in args.modes:
                    queue = f"bench-{mode}-{rep}"
                    await load(server.url, queue, args.messages, args.value_bytes)
                    cpu_started = time.process_time()
                    seconds = await contender(mode, server.url, args.messages, root)(queue)
                    cpu[mode].append((time.process_time() - cpu_started) * 1e6 / args.messages)
                    rates[mode].append(args.messages / seconds)
            if args.profile:
                queue = f"bench-{args.profile}-profile"
                await load(server.url, queue, args.messages, args.value_bytes)
                await profile(contender(args.profile, server.url, args.messages, root), queue)
    finally:
        await anyio.to_thread.run_sync(server.close)
    report(rates, cpu, args)


async def profile(run: Callable[[str], Awaitable[float]], queue: str) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    with profiler:
        await run(queue)
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def report(
    rates: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace
) -> None:
    """Throughput table (bench/_procs.throughput_report); ``cpu µs/msg`` is this process's
    CPU time per message (not the worker's in process mode, never the broker's)."""
    throughput_report(
        f"rabbitmq: {args.messages} messages x {args.value_bytes} B, {args.reps} reps",
        {
            "bench": "rabbitmq",
            "messages": args.messages,
            "value_bytes": args.value_bytes,
            "reps": args.reps,
        },
        rates,
        cpu,
        unit="msg",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--profile", choices=MODES, default=None)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
