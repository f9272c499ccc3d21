"""Redis Streams throughput: a plain redis-py consumer loop vs the eventrun runtime.

    .venv/bin/python -m bench.redis_streams [--entries 200000] [--reps 3] [--profile MODE]

Starts its own ``redis-server`` on a free loopback port, loads ``--entries`` entries
(one ``data`` field of ``--value-bytes`` bytes) into one stream, then measures, alternating
the modes in every repetition, each against a fresh consumer group on the same data:

* ``plain``   - redis.asyncio ``XREADGROUP COUNT 100`` + ``XACK`` loop, nothing else;
* ``faststream`` - FastStream's batch stream subscriber (``StreamSub(batch=True,
  max_records=100)`` in a consumer group), a trivial ``async def`` handler, its logger at
  info level writing to /dev/null;
* ``inline``  - the eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler;
* ``process`` - the eventrun runtime, ``runtime: process`` (one worker), a trivial handler.

The runtime is measured from ``runtime.ready`` (the poller connected and is about to
poll; workers are warm) until every entry was acknowledged in Redis; logs render as
JSON lines to /dev/null at level info, as a daemon's would. Prints a table (median and
min..max records/s; ratio to the plain loop: the median of the per-repetition ratios, with
their range) and one JSON line of results.

200,000 entries by default: with 50,000 a run lasted about 0.3 s and the runtime's first
polls weighed in (inline 0.95x and process 0.79x the plain loop there, 1.17x and 0.96x
on 200,000; the plain loop ran at the same rate on both).
``--profile MODE`` runs that mode once more under pyinstrument and prints the profile.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from bench._procs import free_port, quiet_json_logs, throughput_report
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

STREAM = "bench"
MODES = ("plain", "faststream", "inline", "process")
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
connections:
  redis: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: 1
    min_warm: {min_warm}
    triggers:
      - redis_streams:
          connection: main
          streams: [{stream}]
          group: {group}
          consumer: bench
          starting_position: "0"
          batch_size: 100
"""


# -- the redis server ----------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server (nothing persisted); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def load(url: str, entries: int, value_bytes: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.delete(STREAM)
        value = b"x" * value_bytes
        for start in range(0, entries, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(min(1000, entries - start)):
                    pipe.xadd(STREAM, {"data": value})
                await pipe.execute()
        assert await client.xlen(STREAM) == entries
    finally:
        await client.aclose()


# -- the three contenders ------------------------------------------------------------


async def plain_loop(url: str, group: str, entries: int) -> float:
    """Seconds for a bare XREADGROUP COUNT 100 + XACK loop to consume every entry."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.xgroup_create(STREAM, group, "0")
        done = 0
        started = time.perf_counter()
        while done < entries:
            reply = await client.xreadgroup(group, "bench", {STREAM: ">"}, count=100, block=1000)
            if not reply:
                continue
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await client.xack(STREAM, group, *ids)
            done += len(ids)
        return time.perf_counter() - started
    finally:
        await client.aclose()


def _devnull_logger(name: str) -> logging.Logger:
    """An info-level stdlib logger writing to /dev/null (FastStream logs per batch)."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115
    return logger


async def faststream_run(url: str, group: str, entries: int) -> float:
    """Seconds for FastStream's batch stream subscriber to handle and ack every entry
    (from its ``start()``, after connecting, until Redis has every ack)."""
    from faststream.redis import RedisBroker, StreamSub

    probe = aioredis.Redis.from_url(url)
    await probe.xgroup_create(STREAM, group, "0")  # from the start, like the others
    broker = RedisBroker(url, logger=_devnull_logger(f"bench.faststream.{group}"))
    done = anyio.Event()
    seen = 0

    sub = StreamSub(STREAM, group=group, consumer="bench", batch=True, max_records=100)

    @broker.subscriber(stream=sub)
    async def handle(msgs):  # type: ignore[no-untyped-def]
        nonlocal seen
        seen += len(msgs)
        if seen >= entries:
            done.set()

    try:
        async with broker:
            started = time.perf_counter()
            await broker.start()
            with anyio.fail_after(600):
                await done.wait()
                while (await probe.xpending(STREAM, group))["pending"]:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
            return time.perf_counter() - started
    finally:
        await probe.aclose()


async def runtime_run(url: str, group: str, entries: int, runtime: str, root: Path) -> float:
    """Seconds for the eventrun runtime to handle and acknowledge every entry."""
    app = root / group
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = runtime == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            url=url,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=runtime,
            min_warm=0 if inline else 1,
            stream=STREAM,
            group=group,
        )
    )
    rt = Runtime(load_config(app / "eventrun.yaml"), port=0, serve_http=False)
    stop = anyio.Event()
    probe = aioredis.Redis.from_url(url)
    async with anyio.create_task_group() as tg:
        await tg.start(rt.serve, stop)
        await rt.ready.wait()
        started = time.perf_counter()
        [source] = rt.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        with anyio.fail_after(600):
            while stats.acked < entries:  # noqa: ASYNC110 - a counter, no event to wait on
                await anyio.sleep(0.002)
            # The dispatcher handed every ack to the poller; wait until Redis has them.
            while (await probe.xpending(STREAM, group))["pending"]:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        elapsed = time.perf_counter() - started
        await probe.aclose()
        if stats.invoke_errors:
            raise SystemExit(f"{runtime}: {stats.invoke_errors} failed invocations")
        stop.set()
    return elapsed


def contender(mode: str, url: str, entries: int, root: Path) -> Callable[[str], Awaitable[float]]:
    if mode == "plain":
        return lambda group: plain_loop(url, group, entries)
    if mode == "faststream":
        return lambda group: faststream_run(url, group, entries)
    return lambda group: runtime_run(url, group, entries, mode, root)


# -- driver ----------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in args.modes}
    with redis_server() as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await load(url, args.entries, args.value_bytes)
        for rep in range(args.reps):
            for mode in args.modes:
                cpu_started = time.process_time()
                seconds = await contender(mode, url, args.entries, root)(f"{mode}-{rep}")
                cpu[mode].append((time.process_time() - cpu_started) * 1e6 / args.entries)
                rates[mode].append(args.entries / seconds)
        if args.profile:
            await profile(args.profile, url, args.entries, root)
    report(rates, cpu, args)


async def profile(mode: str, url: str, entries: int, root: Path) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    with profiler:
        await contender(mode, url, entries, root)(f"{mode}-profile")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def report(
    rates: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace
) -> None:
    """Throughput table (bench/_procs.throughput_report); ``cpu µs/rec`` is this process's
    CPU time per entry (a process-mode worker's CPU is not included; Redis' never is)."""
    throughput_report(
        f"redis streams: {args.entries} entries x {args.value_bytes} B, {args.reps} reps",
        {
            "bench": "redis_streams",
            "entries": args.entries,
            "value_bytes": args.value_bytes,
            "reps": args.reps,
        },
        rates,
        cpu,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--profile", choices=MODES, default=None)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
