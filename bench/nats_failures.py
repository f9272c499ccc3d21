"""What FastStream's NATS JetStream subscriber and eventrun's ``nats`` trigger lose or
redeliver in two failure cases, measured on one ``nats-server -js``:

    .venv/bin/python -m bench.nats_failures

* ``raises``: 20 messages on one subject; the handler raises once for message 5 (a
  transient error) and succeeds when it sees it again. Counted: messages handled
  successfully after the consumer settled, and whether message 5 ever came back.
* ``sigterm``: 20 messages; the handler takes 3 s for message 0; the consumer is stopped
  while it runs (FastStream: ``broker.stop()``, what its app does on SIGTERM; eventrun
  (process workers):
  the runtime's stop event, what the CLI sets on SIGTERM, with ``shutdown_grace: 1s``).
  Then a fresh consumer of the same durable reads what comes back: counted are the
  messages never handled and never coming back (lost).

FastStream is used as documented, defaults kept (``PullSub()``, AckPolicy
``REJECT_ON_ERROR`` for JetStream). Prints one line per case and tool and a JSON line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import anyio
import nats

from bench._procs import quiet_json_logs
from bench.nats import nats_server
from bench.redis_streams import _devnull_logger
from eventrun.config import load_config
from eventrun.runtime._runtime import Runtime

COUNT = 20
CONFIG = """
connections:
  nats: {{main: {{url: "{url}"}}}}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: 1s
functions:
  fn:
    handler: fail_app:handler
    runtime: process
    min_warm: 1
    environment: {{CASE: {case}, OUT: "{out}"}}
    triggers:
      - nats: {{connection: main, stream: {stream}, consumer: c, batch_size: 1,
                maximum_batching_window: 0}}
"""
APP = """
import base64, json, os, time

def _note(name, n):
    with open(os.path.join(os.environ["OUT"], name), "a") as f:
        f.write(f"{n}\\n")

def _seen():
    path = os.path.join(os.environ["OUT"], "seen")
    return open(path).read().split() if os.path.exists(path) else []

def handler(event, context):
    for record in event["records"]:
        n = json.loads(base64.b64decode(record["data"]))
        _note("seen", n)
        if os.environ["CASE"] == "raises" and n == 5 and _seen().count("5") == 1:
            raise RuntimeError("transient")
        if os.environ["CASE"] == "sigterm" and n == 0:
            time.sleep(3)
        _note("handled", n)
"""


def _ints(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def prepare(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    for n in range(COUNT):
        await js.publish(f"{stream}.a", json.dumps(n).encode())
    await nc.close()


async def come_back(url: str, stream: str, consumer: str) -> list[int]:
    """What a fresh reader of the durable gets within ack_wait-free 5 s (naks at once,
    redeliveries after their ack_wait are not waited for: that is the point)."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().pull_subscribe_bind(consumer, stream=stream)
        got: list[int] = []
        with anyio.move_on_after(5):
            while True:
                try:
                    msgs = await sub.fetch(COUNT, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    got.append(json.loads(msg.data))
                    await msg.ack()
        return got
    finally:
        await nc.close()


async def faststream_case(url: str, case: str) -> dict[str, Any]:
    from faststream.nats import JStream, NatsBroker, PullSub

    stream = f"FS{case.upper()}"
    await prepare(url, stream)
    broker = NatsBroker(url, logger=_devnull_logger(f"bench.fsfail.{case}"))
    seen: list[int] = []
    handled: list[int] = []
    started = anyio.Event()

    @broker.subscriber(
        f"{stream}.>", stream=JStream(stream, declare=False), durable="c", pull_sub=PullSub()
    )
    async def handle(n: int) -> None:
        seen.append(n)
        started.set()
        if case == "raises" and n == 5 and seen.count(5) == 1:
            raise RuntimeError("transient")
        if case == "sigterm" and n == 0:
            await anyio.sleep(3)
        handled.append(n)

    await broker.start()
    if case == "raises":
        with anyio.move_on_after(5):
            while len(handled) < COUNT:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await broker.stop()
    else:
        await started.wait()
        await anyio.sleep(0.2)
        await broker.stop()
    return outcome(handled, seen, await come_back(url, stream, "c"))


async def eventrun_case(url: str, case: str, root: Path) -> dict[str, Any]:
    stream = f"ER{case.upper()}"
    await prepare(url, stream)
    app = root / case
    app.mkdir()
    (app / "fail_app.py").write_text(APP)
    (app / "eventrun.yaml").write_text(CONFIG.format(url=url, case=case, stream=stream, out=app))
    rt = Runtime(load_config(app / "eventrun.yaml"), port=0, serve_http=False)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(rt.serve, stop)
        await rt.ready.wait()
        if case == "raises":
            with anyio.move_on_after(10):
                while len(set(_ints(app / "handled"))) < COUNT:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        else:
            while not _ints(app / "seen"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)
        stop.set()
    handled, seen = _ints(app / "handled"), _ints(app / "seen")
    return outcome(handled, seen, await come_back(url, stream, "c"))


def outcome(handled: list[int], seen: list[int], back: list[int]) -> dict[str, Any]:
    lost = sorted(set(range(COUNT)) - set(handled) - set(back))
    return {
        "handled": len(set(handled)),
        "came_back": sorted(back),
        "lost": lost,
        "redelivered_5": seen.count(5) > 1,
    }


async def main() -> None:
    quiet_json_logs()
    results: dict[str, Any] = {}
    with nats_server() as url, tempfile.TemporaryDirectory() as tmp:
        for case in ("raises", "sigterm"):
            results[f"faststream_{case}"] = await faststream_case(url, case)
            results[f"eventrun_{case}"] = await eventrun_case(url, case, Path(tmp))
    for name, result in results.items():
        print(f"{name:<22} {result}")
    print(json.dumps({"bench": "nats_failures", "results": results}))


if __name__ == "__main__":
    anyio.run(main)
