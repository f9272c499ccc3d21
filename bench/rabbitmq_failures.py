"""What eventrun (with eventrun-rabbitmq) and FastStream lose or redeliver when things
fail, on the same broker, each with its defaults.

    .venv/bin/python -m bench.rabbitmq_failures

Both run as their own process (``eventrun run``; a FastStream app's ``run()``) against a
``rabbitmq-server`` of this script's own, on durable queues of persistent messages, one
message per handler call (eventrun: ``batch_size: 1``; FastStream's RabbitMQ subscriber
has no batches). Each handler appends ``start ID`` / ``ok ID`` / ``fail ID`` lines to a
ledger.

1. **Handler raises.** Ten messages; ``m3`` raises on every delivery (a poison
   message), ``m5`` only on its first (a transient failure). eventrun has
   ``maximum_retry_attempts: 2`` and ``on_failure: rabbitmq:main/QUEUE-dlq``; FastStream
   its default ack policy. After the run: which messages succeeded, how often each was
   tried, what is still queued, dead-lettered, or gone without success (lost).
2. **SIGTERM during a handler.** Three messages whose handler takes 20 s; SIGTERM one
   second into the first. eventrun has ``shutdown_grace: 1s``, FastStream its default
   ``graceful_timeout`` (15 s): both give up on the handler. After the process exited:
   what is back in the queue, what was acknowledged without finishing (lost).

Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiormq
import anyio
from pamqp import commands as spec

from bench._procs import daemon, free_port, write_app

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "eventrun-rabbitmq" / "tests"))
from rabbitmq_server import RabbitServer  # the plugin tests' launcher

HANDLER_LOGIC = """
import json, os, time
from pathlib import Path

def _log(what, mid):
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{what} {mid}\\n")

def work(mid, slow=True):
    if slow:
        _log("start", mid)
    if slow and os.environ.get("SLOW"):
        time.sleep(float(os.environ["SLOW"]))
    if mid == "m3":
        _log("fail", mid)
        raise ValueError("poison")
    marker = Path(os.environ["LEDGER"] + "." + mid)
    if mid == "m5" and not marker.exists():
        marker.write_text("failed once")
        _log("fail", mid)
        raise ValueError("transient")
    _log("ok", mid)
"""
EVENTRUN_APP = (
    HANDLER_LOGIC
    + """
import base64

def handler(event, context):
    for messages in event["rmqMessagesByQueue"].values():
        for message in messages:
            work(base64.b64decode(message["data"]).decode())
"""
)
FASTSTREAM_APP = (
    HANDLER_LOGIC
    + """
import asyncio, sys
from faststream import FastStream
from faststream.rabbit import RabbitBroker, RabbitQueue

broker = RabbitBroker(sys.argv[1])
app = FastStream(broker)

@broker.subscriber(RabbitQueue(sys.argv[2], durable=True, declare=False))
async def handle(body: bytes) -> None:
    # async, so that a cancellation really stops it (a thread would finish regardless)
    mid = body.decode()
    _log("start", mid)
    if os.environ.get("SLOW"):
        await asyncio.sleep(float(os.environ["SLOW"]))
    work(mid, slow=False)

if __name__ == "__main__":
    asyncio.run(app.run())
"""
)
SLOW_S = 20
"""Scenario 2's handler time: past eventrun's shutdown_grace here (1 s) and past
FastStream's default graceful_timeout (15 s)."""
CONFIG = """
connections:
  rabbitmq: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: 1s
functions:
  fn:
    handler: app.handler
    runtime: process
    concurrency: 1
    min_warm: 1
    environment: {{LEDGER: "{ledger}"{slow}}}
    triggers:
      - rabbitmq:
          connection: main
          queue: {queue}
          batch_size: 1
          maximum_batching_window: 0
          maximum_retry_attempts: 2
          on_failure: "rabbitmq:main/{queue}-dlq"
"""


async def prepare(url: str, queue: str, n: int) -> None:
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        for name in (queue, f"{queue}-dlq"):
            await ch.queue_declare(name, durable=True)
        for i in range(n):
            props = spec.Basic.Properties(delivery_mode=2, message_id=f"id-{i}")
            await ch.basic_publish(f"m{i}".encode(), routing_key=queue, properties=props)
    finally:
        await conn.close()


async def ready(url: str, queue: str) -> int:
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel()
        return int((await ch.queue_declare(queue, passive=True)).message_count or 0)
    finally:
        await conn.close()


def ledger_of(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def outcome(lines: list[tuple[str, str]], n: int, queued: int, dead: int) -> dict[str, Any]:
    ok = Counter(mid for what, mid in lines if what == "ok")
    tries = Counter(mid for what, mid in lines if what == "start")
    never_ok = [f"m{i}" for i in range(n) if not ok[f"m{i}"]]
    return {
        "succeeded": sorted(ok, key=lambda m: int(m[1:])),
        "tries": {m: tries[m] for m in sorted(tries, key=lambda m: int(m[1:]))},
        "queued": queued,
        "dead_lettered": dead,
        "lost": max(0, len(never_ok) - queued - dead),
        "lost_ids_if_any": never_ok if len(never_ok) > queued + dead else [],
    }


async def settled(url: str, queue: str, ledger: Path, n: int) -> dict[str, Any]:
    return outcome(ledger_of(ledger), n, await ready(url, queue), await ready(url, f"{queue}-dlq"))


def spawn(app: Path, url: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The FastStream app as its own process (its ``run()`` handles SIGTERM)."""
    return subprocess.Popen(
        [sys.executable, str(app), url, queue],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(check: Any, timeout_s: float) -> None:
    with anyio.move_on_after(timeout_s):
        while not check():  # noqa: ASYNC110 - a ledger file, no event
            await anyio.sleep(0.1)


# -- scenario 1: the handler raises ----------------------------------------------------


async def raises_eventrun(url: str, root: Path) -> dict[str, Any]:
    queue, ledger = "raise-eventrun", root / "raise-eventrun.log"
    await prepare(url, queue, 10)
    config = write_app(
        root / queue,
        CONFIG.format(url=url, ledger=ledger, queue=queue, slow=""),
        {"app.py": EVENTRUN_APP},
    )
    with daemon(config, free_port()):
        await wait_for(lambda: sum(w == "ok" for w, _ in ledger_of(ledger)) >= 9, 30)
        await anyio.sleep(3)  # the poison's retries and its dead-lettering
    return await settled(url, queue, ledger, 10)


async def raises_faststream(url: str, root: Path) -> dict[str, Any]:
    queue, ledger = "raise-faststream", root / "raise-faststream.log"
    await prepare(url, queue, 10)
    app = root / "fs_app.py"
    app.write_text(FASTSTREAM_APP)
    proc = spawn(app, url, queue, {"LEDGER": str(ledger)})
    try:
        await wait_for(lambda: len({m for _, m in ledger_of(ledger)}) >= 10, 30)
        await anyio.sleep(3)  # anything requeued would be tried again meanwhile
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return await settled(url, queue, ledger, 10)


# -- scenario 2: SIGTERM during a handler ------------------------------------------------


def _started(ledger: Path) -> bool:
    return any(what == "start" for what, _ in ledger_of(ledger))


async def sigterm_eventrun(url: str, root: Path) -> dict[str, Any]:
    queue, ledger = "term-eventrun", root / "term-eventrun.log"
    await prepare(url, queue, 3)
    config = write_app(
        root / queue,
        CONFIG.format(url=url, ledger=ledger, queue=queue, slow=f', SLOW: "{SLOW_S}"'),
        {"app.py": EVENTRUN_APP},
    )
    started = time.monotonic()
    with daemon(config, free_port()):  # SIGTERM when the block ends
        await wait_for(lambda: _started(ledger), 30)
        await anyio.sleep(1)
    stopped_s = time.monotonic() - started
    result = await settled(url, queue, ledger, 3)
    result["exit_s"] = round(stopped_s, 1)
    return result


async def sigterm_faststream(url: str, root: Path) -> dict[str, Any]:
    queue, ledger = "term-faststream", root / "term-faststream.log"
    await prepare(url, queue, 3)
    app = root / "fs_app.py"
    app.write_text(FASTSTREAM_APP)
    proc = spawn(app, url, queue, {"LEDGER": str(ledger), "SLOW": str(SLOW_S)})
    started = time.monotonic()
    try:
        await wait_for(lambda: _started(ledger), 30)
        await anyio.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    stopped_s = time.monotonic() - started
    result = await settled(url, queue, ledger, 3)
    result["exit_s"] = round(stopped_s, 1)
    return result


async def main() -> None:
    server = RabbitServer()
    results: dict[str, Any] = {}
    try:
        await anyio.to_thread.run_sync(server.start)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            results["raises"] = {
                "eventrun": await raises_eventrun(server.url, root),
                "faststream": await raises_faststream(server.url, root),
            }
            results["sigterm"] = {
                "eventrun": await sigterm_eventrun(server.url, root),
                "faststream": await sigterm_faststream(server.url, root),
            }
    finally:
        await anyio.to_thread.run_sync(server.close)
    for scenario, by in results.items():
        print(f"== {scenario}")
        for who, res in by.items():
            print(
                f"{who:<11} succeeded={len(res['succeeded'])} queued={res['queued']} "
                f"dead_lettered={res['dead_lettered']} lost={res['lost']} "
                f"{res['lost_ids_if_any']} tries={res['tries']}"
                + (f" exit_s={res['exit_s']}" if "exit_s" in res else "")
            )
    print(json.dumps({"bench": "rabbitmq_failures", "results": results}))


if __name__ == "__main__":
    anyio.run(main)
