"""MQTT throughput: a plain paho-mqtt consumer loop vs the eventrun runtime (mqtt plugin).

    .venv/bin/python -m bench.mqtt [--messages 50000] [--reps 3] [--modes plain process]

Starts its own ``mosquitto`` on a free loopback port (no limit on queued messages), then
in every repetition, alternating the modes, measures each draining the same backlog: a
fresh persistent session (its own client id) subscribes to one topic and disconnects,
``--messages`` QoS 1 messages of ``--value-bytes`` bytes are published into it while it is
away, and the contender connects and handles + acknowledges every one:

* ``plain``   - paho-mqtt's own network loop (``loop_forever``), ``manual_ack`` with the
  PUBACK sent right in ``on_message``: consume + ack, nothing else;
* ``inline``  - the eventrun runtime, ``runtime: inline``, a trivial ``async def`` handler;
* ``process`` - the eventrun runtime, ``runtime: process`` (one worker), a trivial handler.

Both sides use MQTT 5 with Receive Maximum 1000. The runtime is measured from
``runtime.ready`` until the dispatcher acknowledged every message (PUBACKs queued; the
broker has them a moment later); the plain loop from CONNECT until its last PUBACK is
queued. Prints a table (median and min..max messages/s, the paired ratio to the plain
loop) and one JSON line of results.
"""

from __future__ import annotations

import argparse
import getpass
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._procs import free_port, quiet_json_logs, throughput_report, wait_port
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

TOPIC = "bench/t"
MODES = ("plain", "inline", "process")
RECEIVE_MAXIMUM = 1000
HANDLERS = """
def handler(event, context):
    return None

async def ahandler(event, context):
    return None
"""
CONFIG = """
store: {{url: "sqlite:///state.db"}}
functions:
  fn:
    handler: {handler}
    runtime: {runtime}
    concurrency: 1
    min_warm: {min_warm}
    triggers:
      - mqtt:
          url: "mqtt://127.0.0.1:{port}"
          topics: ["{topic}"]
          client_id: {client_id}
          receive_maximum: {receive_maximum}
          batch_size: 100
"""
BROKER_CONFIG = """\
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
"""


@contextmanager
def mosquitto() -> Iterator[int]:
    """A throw-away Mosquitto (nothing persisted, no queue limit); yields its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto not found: apt-get install mosquitto")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(BROKER_CONFIG.format(user=getpass.getuser(), port=port))
        proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def _client(client_id: str, **kwargs: object) -> mqtt.Client:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        **kwargs,  # type: ignore[arg-type]
    )


def _connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def prepare(port: int, client_id: str, messages: int, value_bytes: int) -> None:
    """Create ``client_id``'s session (subscribed, then away) and queue the backlog in it."""
    sub = _client(client_id)
    done = threading.Event()
    sub.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    sub.on_subscribe = lambda *a: done.set()
    sub.connect("127.0.0.1", port, clean_start=True, properties=_connect_props())
    sub.loop_start()
    if not done.wait(10):
        raise SystemExit("could not subscribe")
    sub.disconnect()
    sub.loop_stop()
    sub.reinitialise()  # closes the socket pair loop_start opened
    pub = _client(f"{client_id}-pub")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    value = b"x" * value_bytes
    infos = [pub.publish(TOPIC, value, qos=1) for _ in range(messages)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    pub.reinitialise()


def plain_loop(port: int, client_id: str, messages: int) -> float:
    """Seconds for paho's own loop to receive and PUBACK every message (manual_ack)."""
    client = _client(client_id, manual_ack=True)
    seen = 0
    started = 0.0

    def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal seen
        c.ack(message.mid, message.qos)
        seen += 1
        if seen >= messages:
            c.disconnect()

    client.on_message = on_message
    started = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=_connect_props())
    client.loop_forever()
    if seen < messages:
        raise SystemExit(f"plain: only {seen} of {messages} messages")
    return time.perf_counter() - started


async def runtime_run(port: int, client_id: str, messages: int, runtime: str, root: Path) -> float:
    """Seconds for the eventrun runtime to handle and acknowledge every message."""
    app = root / client_id
    app.mkdir()
    (app / "bench_app.py").write_text(HANDLERS)
    inline = runtime == "inline"
    (app / "eventrun.yaml").write_text(
        CONFIG.format(
            port=port,
            handler="bench_app:ahandler" if inline else "bench_app:handler",
            runtime=runtime,
            min_warm=0 if inline else 1,
            topic=TOPIC,
            client_id=client_id,
            receive_maximum=RECEIVE_MAXIMUM,
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


def contender(mode: str, port: int, messages: int, root: Path) -> Callable[[str], Awaitable[float]]:
    if mode == "plain":
        return lambda cid: anyio.to_thread.run_sync(plain_loop, port, cid, messages)
    return lambda cid: runtime_run(port, cid, messages, mode, root)


async def main(args: argparse.Namespace) -> None:
    quiet_json_logs()
    rates: dict[str, list[float]] = {mode: [] for mode in args.modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in args.modes}
    with mosquitto() as port, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rep in range(args.reps):
            for mode in args.modes:
                cid = f"bench-{mode}-{rep}"
                await anyio.to_thread.run_sync(prepare, port, cid, args.messages, args.value_bytes)
                cpu_started = time.process_time()
                seconds = await contender(mode, port, args.messages, root)(cid)
                cpu[mode].append((time.process_time() - cpu_started) * 1e6 / args.messages)
                rates[mode].append(args.messages / seconds)
    report(rates, cpu, args)


def report(
    rates: dict[str, list[float]], cpu: dict[str, list[float]], args: argparse.Namespace
) -> None:
    """Throughput table (bench/_procs.throughput_report); ``cpu µs/msg`` is this process's
    CPU time per message (the daemon side and, for ``plain``, paho's loop)."""
    throughput_report(
        f"mqtt: {args.messages} messages x {args.value_bytes} B, QoS 1, {args.reps} reps",
        {
            "bench": "mqtt",
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
    anyio.run(main, parser.parse_args(), backend_options={"use_uvloop": True})
