"""``eventrun run`` with an ``mqtt`` trigger, as a real process: SIGKILL mid-run loses
nothing, SIGTERM acknowledges nothing unfinished, a poison message reaches an ``mqtt:``
destination after its retries. The handler appends one line per record to a ledger with
a single O_APPEND write after the whole batch is handled (``started`` lines before)."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
import paho.mqtt.client as mqtt
from mqtt_broker import Mosquitto, Publisher, close_client
from mqtt_kit import drain, first_occurrences_in_order, payload_of, poller, unique
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests._daemon import Daemon

HANDLER = r"""
import base64, os, time

def _append(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)

def handler(event, context):
    payloads = [base64.b64decode(r["payload"]).decode() for r in event["Records"]]
    if os.environ.get("STARTED"):
        _append(os.environ["STARTED"], "".join(p + "\n" for p in payloads))
    if os.environ.get("POISON") in payloads:
        raise ValueError("poison message")
    time.sleep(float(os.environ.get("DELAY", "0")))
    _append(os.environ["LEDGER"], "".join(p + "\n" for p in payloads))
    return None
"""


def write_app(root: Path, broker: Mosquitto, trigger: dict[str, Any], env: dict[str, str]) -> Path:
    (root / "mqtt_app.py").write_text(HANDLER)
    config = {
        "connections": {"mqtt": {"main": {"url": broker.url}}},
        "store": {"url": "sqlite:///state.db"},
        "shutdown_grace": env.pop("GRACE", "5s"),
        "functions": {
            "fn": {
                "handler": "mqtt_app:handler",
                "concurrency": 2,
                "min_warm": 1,
                "environment": env,
                "triggers": [{"mqtt": {"connection": "main", **trigger}}],
            }
        },
    }
    path = root / "eventrun.yaml"
    path.write_text(json.dumps(config))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def by_topic(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for value in values:
        out[value.rsplit(":", 1)[0]].append(value)
    return out


def wait_lines(path: Path, predicate: Any, daemon: Daemon, timeout_s: float = 90) -> None:
    daemon.wait_for(lambda e: predicate(lines(path)), timeout_s)


def test_mqtt_daemon_sigkill_mid_run_loses_nothing(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("kill")
    topics = [f"{prefix}/{i}" for i in range(3)]
    client_id = unique("c")
    ledger = tmp_path / "ledger.txt"
    trigger = {"topics": [f"{prefix}/+"], "client_id": client_id, "batch_size": 20}
    config = write_app(tmp_path, broker, trigger, {"LEDGER": str(ledger), "DELAY": "0.01"})
    per_topic = 1000
    expected = {f"{t}:{n}" for t in topics for n in range(per_topic)}
    daemon = Daemon(config).start()
    try:
        daemon.wait_for(lambda e: e.get("event") == "mqtt.connected")
        sender = threading.Thread(target=publisher.publish_interleaved, args=(topics, per_topic))
        sender.start()
        for kill_at in (600, 1800):
            daemon.wait_for(lambda e, n=kill_at: len(lines(ledger)) >= n, 90)
            daemon.kill()
            assert len(set(lines(ledger))) < len(expected), "the kill came too late"
            daemon.start()
        sender.join(60)
        daemon.wait_for(lambda e: set(lines(ledger)) >= expected, 120)
    finally:
        daemon.stop()
    handled = lines(ledger)
    assert set(handled) == expected
    for topic, values in by_topic(handled).items():
        assert first_occurrences_in_order(values), topic
    duplicates = sum(c - 1 for c in Counter(handled).values())
    assert duplicates <= 2 * 1000  # at most the receive window (1000) per kill
    with anyio.from_thread.start_blocking_portal() as portal:
        left = portal.call(_drain, broker, [f"{prefix}/+"], client_id)
    assert left == [], "the broker still had unacknowledged messages"


async def _drain(broker: Mosquitto, topics: list[str], client_id: str) -> list[str]:
    async with poller(broker, topics, client_id) as p:
        return [payload_of(e) for e in await drain(p)]


def test_mqtt_daemon_sigterm_acknowledges_nothing_unfinished(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("term")
    topic = f"{prefix}/t"
    client_id = unique("c")
    ledger, started = tmp_path / "ledger.txt", tmp_path / "started.txt"
    trigger = {"topics": [topic], "client_id": client_id, "batch_size": 5}
    env = {"LEDGER": str(ledger), "STARTED": str(started), "DELAY": "3", "GRACE": "1s"}
    config = write_app(tmp_path, broker, trigger, env)
    daemon = Daemon(config).start()
    try:
        daemon.wait_for(lambda e: e.get("event") == "mqtt.connected")
        publisher.publish(topic, [f"{topic}:{n}".encode() for n in range(100)])
        daemon.wait_for(lambda e: len(lines(started)) >= 5)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    unfinished = set(lines(started)) - set(lines(ledger))
    assert unfinished, "every started batch finished: nothing was cut short"
    with anyio.from_thread.start_blocking_portal() as portal:
        again = set(portal.call(_drain, broker, [topic], client_id))
    assert unfinished <= again
    assert set(lines(ledger)) | again == {f"{topic}:{n}" for n in range(100)}


def test_mqtt_daemon_poison_to_mqtt_destination(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("dlq")
    topics = [f"{prefix}/{i}" for i in range(2)]
    dlq_topic = f"{prefix}-failed"
    ledger = tmp_path / "ledger.txt"
    poison = f"{topics[0]}:42"
    trigger = {
        "topics": [f"{prefix}/+"],
        "client_id": unique("c"),
        "batch_size": 10,
        "bisect_batch_on_function_error": True,
        "maximum_retry_attempts": 1,
        "on_failure": f"mqtt:main/{dlq_topic}",
    }
    config = write_app(tmp_path, broker, trigger, {"LEDGER": str(ledger), "POISON": poison})
    failures: list[dict[str, Any]] = []
    got = threading.Event()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        failures.append(json.loads(message.payload))
        got.set()

    watcher.on_message = on_message
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    watcher.subscribe(dlq_topic, qos=1)
    daemon = Daemon(config).start()
    try:
        daemon.wait_for(lambda e: e.get("event") == "mqtt.connected")
        publisher.publish_interleaved(topics, 200)
        expected = {f"{t}:{n}" for t in topics for n in range(200)} - {poison}
        daemon.wait_for(lambda e: set(lines(ledger)) >= expected and got.is_set(), 90)
    finally:
        daemon.stop()
        close_client(watcher)
    handled = lines(ledger)
    assert Counter(handled).most_common(1)[0][1] == 1  # each other message once
    assert set(handled) == expected
    [failure] = failures
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert [payload_of(r) for r in failure["payload"]["Records"]] == [poison]


def test_mqtt_daemon_waits_for_a_broker_that_is_down_at_start(tmp_path: Path) -> None:
    late = Mosquitto(tmp_path / "late")  # its port chosen, nothing listening yet
    ledger = tmp_path / "ledger.txt"
    trigger = {"topics": ["late/t"], "client_id": unique("c"), "batch_size": 10}
    config = write_app(tmp_path, late, trigger, {"LEDGER": str(ledger)})
    daemon = Daemon(config).start(wait_ready=False)  # not ready while its source is down
    try:
        daemon.wait_for(lambda e: e.get("event") == "source.connect_failed")
        late.start()
        daemon.wait_for(lambda e: e.get("event") == "mqtt.connected", 60)
        pub = Publisher(late.port)
        try:
            pub.publish("late/t", [f"late/t:{n}".encode() for n in range(20)])
        finally:
            pub.close()
        daemon.wait_for(lambda e: len(lines(ledger)) >= 20)
    finally:
        daemon.stop()
        late.stop()
    assert lines(ledger) == [f"late/t:{n}" for n in range(20)]


def test_mqtt_daemon_broker_restart_mid_run_loses_nothing(
    tmp_path: Path, broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("brestart")
    topics = [f"{prefix}/{i}" for i in range(3)]
    ledger = tmp_path / "ledger.txt"
    trigger = {
        "topics": [f"{prefix}/+"],
        "client_id": unique("c"),
        "batch_size": 10,
        "receive_maximum": 200,
    }
    config = write_app(tmp_path, broker, trigger, {"LEDGER": str(ledger), "DELAY": "0.02"})
    daemon = Daemon(config).start()
    try:
        daemon.wait_for(lambda e: e.get("event") == "mqtt.connected")
        publisher.publish_interleaved(topics, 500)
        daemon.wait_for(lambda e: len(lines(ledger)) >= 300)
        broker.restart()  # graceful: Mosquitto saves the session's messages first
        assert len(set(lines(ledger))) < 1500, "the restart came too late"
        late = Publisher(broker.port)
        try:
            late.publish_interleaved([f"{prefix}/9"], 200)
        finally:
            late.close()
        expected = {f"{t}:{n}" for t in topics for n in range(500)}
        expected |= {f"{prefix}/9:{n}" for n in range(200)}
        daemon.wait_for(lambda e: set(lines(ledger)) >= expected, 120)
        assert daemon.events("mqtt.connection_lost")
    finally:
        daemon.stop()
    handled = lines(ledger)
    assert set(handled) == expected
    for topic, values in by_topic(handled).items():
        assert first_occurrences_in_order(values), topic
