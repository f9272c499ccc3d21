"""``eventrun run`` with a ``nats`` trigger, as a real process against a real
``nats-server -js``: SIGKILL mid-run and a broker restart lose nothing, SIGTERM
acknowledges nothing unfinished, a poison message reaches a ``nats:`` destination after
its retries. The handler (process workers) appends one JSON line per record to a ledger
with a single O_APPEND write after the whole batch is handled (``started`` lines before).
Waits poll the ledger and the consumer's state: there is no event for "caught up"."""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import nats
from nats_kit import make_stream, publish, wait_settled
from nats_server import NatsServer

from tests._daemon import Daemon

TOTAL = 3000
HANDLER = r"""
import base64, json, os, time

def _append(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)

def handler(event, context):
    assert event["eventSource"] == "nats:jetstream"
    lines = []
    for record in event["records"]:
        body = json.loads(base64.b64decode(record["data"]))
        if body["id"] == int(os.environ.get("POISON", "-1")):
            raise ValueError("poison message")
        body["delivered"] = record["deliveredCount"]
        lines.append(json.dumps(body) + "\n")
    if os.environ.get("STARTED"):
        _append(os.environ["STARTED"], "".join(lines))
    time.sleep(float(os.environ.get("DELAY", "0")))
    _append(os.environ["LEDGER"], "".join(lines))
"""


def write_app(root: Path, server: NatsServer, trigger: dict[str, Any], env: dict[str, str]) -> Path:
    (root / "nats_app.py").write_text(HANDLER)
    config = {
        "connections": {"nats": {"main": {"url": server.url}}},
        "store": {"url": "sqlite:///state.db"},
        "shutdown_grace": env.pop("GRACE", "5s"),
        "functions": {
            "fn": {
                "handler": "nats_app:handler",
                "concurrency": 4,
                "min_warm": 1,
                "environment": env,
                "triggers": [
                    {"nats": {"connection": "main", "consumer": "fn", "ack_wait": "3s", **trigger}}
                ],
            }
        },
    }
    path = root / "eventrun.yaml"
    path.write_text(json.dumps(config))
    return path


def ledger(path: Path) -> list[dict[str, int]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids(path: Path) -> set[int]:
    return {line["id"] for line in ledger(path)}


def wait(daemon: Daemon, predicate: Callable[[], bool], timeout_s: float = 90) -> None:
    daemon.wait_for(lambda e: predicate(), timeout_s)


def prepare(server: NatsServer, stream: str, count: int = TOTAL) -> None:
    async def main() -> None:
        nc = await nats.connect(server.url)
        try:
            await make_stream(nc, stream)
            await publish(nc, stream, count, subjects=4)
        finally:
            await nc.close()

    anyio.run(main)


def settled(server: NatsServer, stream: str) -> None:
    async def main() -> None:
        nc = await nats.connect(server.url)
        try:
            await wait_settled(nc, stream, timeout_s=60)
        finally:
            await nc.close()

    anyio.run(main)


def first_deliveries_in_order(lines: list[dict[str, int]]) -> None:
    for subject in {line["subject"] for line in lines}:
        seqs = [x["seq"] for x in lines if x["subject"] == subject and x["delivered"] == 1]
        assert seqs == sorted(seqs), subject


def test_nats_daemon_sigkill_mid_run_loses_nothing(
    tmp_path: Path, nats_server: NatsServer, stream_name: str
) -> None:
    prepare(nats_server, stream_name)
    path = tmp_path / "ledger.jsonl"
    trigger = {"stream": stream_name, "batch_size": 20}
    config = write_app(tmp_path, nats_server, trigger, {"LEDGER": str(path), "DELAY": "0.1"})
    daemon = Daemon(config).start()
    try:
        for kill_at in (600, 1800):
            wait(daemon, lambda n=kill_at: len(ledger(path)) >= n)
            daemon.kill()
            assert len(ids(path)) < TOTAL, "the kill came too late"
            daemon.start()
        wait(daemon, lambda: len(ids(path)) >= TOTAL, 120)
        settled(nats_server, stream_name)
    finally:
        daemon.stop()
    lines = ledger(path)
    assert ids(path) == set(range(TOTAL))
    first_deliveries_in_order(lines)
    duplicates = sum(n - 1 for n in Counter(x["id"] for x in lines).values())
    assert duplicates <= 2 * 1000  # at most what a killed daemon held unacknowledged


def test_nats_daemon_broker_restart_mid_run_loses_nothing(
    tmp_path: Path, own_nats: NatsServer, stream_name: str
) -> None:
    prepare(own_nats, stream_name)
    path = tmp_path / "ledger.jsonl"
    trigger = {"stream": stream_name, "batch_size": 20}
    config = write_app(tmp_path, own_nats, trigger, {"LEDGER": str(path), "DELAY": "0.1"})
    daemon = Daemon(config).start()
    try:
        wait(daemon, lambda: len(ledger(path)) >= TOTAL // 3)
        own_nats.restart()  # same port, same store directory
        assert len(ids(path)) < TOTAL, "the restart came too late"
        wait(daemon, lambda: len(ids(path)) >= TOTAL, 120)
        settled(own_nats, stream_name)
        assert daemon.events("nats.reconnected"), "the daemon never saw the outage"
    finally:
        daemon.stop()
    assert ids(path) == set(range(TOTAL))


def test_nats_daemon_sigterm_acknowledges_nothing_unfinished(
    tmp_path: Path, nats_server: NatsServer, stream_name: str
) -> None:
    prepare(nats_server, stream_name, 200)
    path, started = tmp_path / "ledger.jsonl", tmp_path / "started.jsonl"
    trigger = {"stream": stream_name, "batch_size": 5}
    env = {"LEDGER": str(path), "STARTED": str(started), "DELAY": "3", "GRACE": "1s"}
    config = write_app(tmp_path, nats_server, trigger, env)
    daemon = Daemon(config).start()
    try:
        wait(daemon, lambda: len(ledger(started)) >= 5)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    unfinished = ids(started) - ids(path)
    assert unfinished, "every started batch finished: nothing was cut short"
    # a second daemon gets exactly what the first did not finish: nothing acked early
    path2 = tmp_path / "ledger2.jsonl"
    config = write_app(tmp_path, nats_server, trigger, {"LEDGER": str(path2)})
    daemon = Daemon(config).start()
    try:
        wait(daemon, lambda: ids(path) | ids(path2) >= set(range(200)), 60)
        settled(nats_server, stream_name)
    finally:
        daemon.stop()
    assert unfinished <= ids(path2)
    assert not ids(path) & ids(path2), "a finished record came back: its ack was lost"
    first_deliveries_in_order(ledger(path) + ledger(path2))


def test_nats_daemon_poison_to_nats_destination(
    tmp_path: Path, nats_server: NatsServer, stream_name: str
) -> None:
    prepare(nats_server, stream_name, 400)

    async def dlq_stream() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await make_stream(nc, f"D{stream_name}", [f"dlq.{stream_name}"])
        finally:
            await nc.close()

    anyio.run(dlq_stream)
    path = tmp_path / "ledger.jsonl"
    trigger = {
        "stream": stream_name,
        "subjects": [f"{stream_name}.>"],
        "batch_size": 10,
        "maximum_retry_attempts": 2,
        "bisect_batch_on_function_error": True,
        "on_failure": f"nats:main/dlq.{stream_name}",
    }
    config = write_app(tmp_path, nats_server, trigger, {"LEDGER": str(path), "POISON": "101"})
    daemon = Daemon(config).start()
    try:
        wait(daemon, lambda: len(ids(path)) >= 399)
        settled(nats_server, stream_name)
    finally:
        daemon.stop()
    counts = Counter(x["id"] for x in ledger(path))
    assert set(counts) == set(range(400)) - {101}
    assert max(counts.values()) == 1

    async def dlq() -> list[dict[str, Any]]:
        nc = await nats.connect(nats_server.url)
        try:
            sub = await nc.jetstream().pull_subscribe(f"dlq.{stream_name}", "dlq-reader")
            return [json.loads(m.data) for m in await sub.fetch(10, timeout=2)]
        finally:
            await nc.close()

    [doc] = anyio.run(dlq)
    assert doc["requestContext"]["condition"] == "RetryAttemptsExhausted"
    [record] = doc["payload"]["records"]
    assert json.loads(base64.b64decode(record["data"]))["id"] == 101
    assert doc["NATSBatchInfo"]["stream"] == stream_name
