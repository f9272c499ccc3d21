"""What a failing or interrupted MQTT handler costs: FastStream's MQTT subscriber vs eventrun.

    .venv/bin/python -m bench.mqtt_failures

Starts its own ``mosquitto`` on a free loopback port. Each contender runs as a real
process with a persistent session (fixed client id, QoS 1 subscription) and a handler that
appends every message it *finished* to a ledger. Two cases:

* ``raises``  - 10 messages; the handler raises on ``m5`` every time. The contender is then
  stopped (SIGTERM) and a plain paho client resumes the session: what the broker still
  holds is what will be redelivered; ``m5`` anywhere else (eventrun's ``on_failure``
  topic) is kept.
* ``sigterm`` - 1 message whose handler takes 5 s; SIGTERM once it started (grace 1 s),
  then resume the session the same way.

FastStream is run with its default ack policy (``AckPolicy.ACK``: acknowledge after
processing, whatever the outcome) and with ``NACK_ON_ERROR`` (leave a failed message
unacknowledged: MQTT has no nack). eventrun runs with ``maximum_retry_attempts: 2`` and
``on_failure: mqtt:main/failed``. Prints one line per contender and case, then one JSON
line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.mqtt import mosquitto

FASTSTREAM_APP = """
import asyncio, os, sys
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.mqtt import MQTTBroker, QoS

policy = AckPolicy(os.environ["POLICY"])
broker = MQTTBroker(
    f"mqtt://127.0.0.1:{os.environ['PORT']}", client_id=os.environ["CLIENT_ID"],
    clean_session=False, session_expiry_interval=3600, graceful_timeout=1.0,
)

@broker.subscriber(os.environ["TOPIC"], qos=QoS.AT_LEAST_ONCE, ack_policy=policy)
async def handle(body: bytes) -> None:
    text = body.decode()
    with open(os.environ["STARTED"], "a") as f:
        f.write(text + "\\n")
    if text == "m5" and os.environ["CASE"] == "raises":
        raise ValueError("poison")
    if os.environ["CASE"] == "sigterm":
        await asyncio.sleep(5)
    with open(os.environ["LEDGER"], "a") as f:
        f.write(text + "\\n")

app = FastStream(broker)

if __name__ == "__main__":
    asyncio.run(app.run())
"""

EVENTRUN_HANDLER = """
import base64, os, time

def handler(event, context):
    for record in event["Records"]:
        text = base64.b64decode(record["payload"]).decode()
        with open(os.environ["STARTED"], "a") as f:
            f.write(text + "\\n")
        if text == "m5" and os.environ["CASE"] == "raises":
            raise ValueError("poison")
        if os.environ["CASE"] == "sigterm":
            time.sleep(5)
        with open(os.environ["LEDGER"], "a") as f:
            f.write(text + "\\n")
"""

EVENTRUN_CONFIG = """
connections: {{mqtt: {{main: {{url: "mqtt://127.0.0.1:{port}"}}}}}}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: 1s
functions:
  fn:
    handler: app:handler
    min_warm: 1
    environment: {environment}
    triggers:
      - mqtt:
          connection: main
          topics: ["{topic}"]
          client_id: {client_id}
          batch_size: 1
          maximum_retry_attempts: 2
          on_failure: "mqtt:main/{topic}-failed"
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Watcher:
    """A paho client subscribed to ``topic`` (for the on_failure topic)."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: list[bytes] = []
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = lambda c, u, m: self.got.append(m.payload)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        ready.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.reinitialise()


def publish(port: int, topic: str, payloads: list[str]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for info in [client.publish(topic, p.encode(), qos=1) for p in payloads]:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    client.reinitialise()


def resume(port: int, client_id: str, quiet_s: float = 2.0) -> list[str]:
    """What the broker redelivers to the session ``client_id`` (acknowledging it)."""
    got: list[str] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_message = lambda c, u, m: got.append(m.payload.decode())
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 60
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    seen = -1
    while seen != len(got):
        seen = len(got)
        time.sleep(quiet_s)
    client.disconnect()
    client.loop_stop()
    client.reinitialise()
    return got


def run_case(contender: str, case: str, port: int, root: Path) -> dict[str, Any]:
    work = root / f"{contender}-{case}"
    work.mkdir()
    client_id, topic = f"{contender}-{case}", f"cmp/{contender}/{case}"
    ledger, started = work / "ledger.txt", work / "started.txt"
    env = {
        **os.environ,
        "PORT": str(port),
        "CLIENT_ID": client_id,
        "TOPIC": topic,
        "LEDGER": str(ledger),
        "STARTED": str(started),
        "CASE": case,
    }
    if contender.startswith("faststream"):
        env["POLICY"] = "ack" if contender == "faststream" else "nack_on_error"
        (work / "fs_app.py").write_text(FASTSTREAM_APP)
        argv = [sys.executable, "fs_app.py"]
    else:
        (work / "app.py").write_text(textwrap.dedent(EVENTRUN_HANDLER))
        (work / "eventrun.yaml").write_text(
            EVENTRUN_CONFIG.format(
                port=port,
                topic=topic,
                client_id=client_id,
                environment=json.dumps({k: env[k] for k in ("LEDGER", "STARTED", "CASE")}),
            )
        )
        argv = [sys.executable, "-m", "eventrun", "run", "-c", "eventrun.yaml", "--port", "0"]
    failed_topic = Watcher(port, f"{topic}-failed")
    # subscribe once (and leave) so the session exists before anything is published
    resume(port, client_id, quiet_s=0.2)
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(3)  # connected and subscribed (both log it; a fixed wait keeps this simple)
        if case == "raises":
            payloads = [f"m{n}" for n in range(10)]
            publish(port, topic, payloads)
            _wait(lambda: len(set(_lines(ledger))) >= 9, 30, "the other 9 messages")
            time.sleep(3)  # retries / destinations
        else:
            payloads = ["slow"]
            publish(port, topic, payloads)
            _wait(lambda: bool(_lines(started)), 30, "the handler to start")
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    redelivered = resume(port, client_id)
    failed_topic.close()
    finished = set(_lines(ledger))
    kept = set(redelivered) | {p.decode() for p in failed_topic.got if p}
    if contender == "eventrun":  # the failure record holds the message, base64
        kept |= {_failure_payload(p) for p in failed_topic.got}
    lost = sorted(set(payloads) - finished - kept)
    return {
        "contender": contender,
        "case": case,
        "exit_code": exit_code,
        "attempts_of_failing": _lines(started).count("m5" if case == "raises" else "slow"),
        "finished": len(finished),
        "redelivered_on_resume": sorted(set(redelivered)),
        "to_failure_destination": len(failed_topic.got),
        "lost": lost,
    }


def _failure_payload(raw: bytes) -> str:
    import base64

    try:
        doc = json.loads(raw)
        return base64.b64decode(doc["payload"]["Records"][0]["payload"]).decode()
    except (ValueError, KeyError, IndexError):
        return ""


def main() -> None:
    results = []
    with mosquitto() as port, tempfile.TemporaryDirectory() as tmp:
        for contender in ("faststream", "faststream-nack", "eventrun"):
            for case in ("raises", "sigterm"):
                r = run_case(contender, case, port, Path(tmp))
                results.append(r)
                print(
                    f"{contender:<16}{case:<9} attempts={r['attempts_of_failing']} "
                    f"finished={r['finished']} redelivered={r['redelivered_on_resume']} "
                    f"to_on_failure={r['to_failure_destination']} lost={r['lost']} "
                    f"exit={r['exit_code']}"
                )
    print(json.dumps({"bench": "mqtt_failures", "results": results}))


if __name__ == "__main__":
    main()
