"""A private Mosquitto broker on a free loopback port, and a plain paho publisher.

:class:`Mosquitto` writes its own config into a temporary directory: one listener on
127.0.0.1, persistence in that directory (so a restart keeps sessions, subscriptions
and unacknowledged messages), no limit on queued messages. ``stop()`` is a graceful
SIGTERM (Mosquitto saves its database then); ``start()`` again uses the same port.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from tests.fixtures._ports import PortTaken, free_port, start_on_free_port, wait_for_port

MISSING = "mosquitto not found: apt-get install mosquitto (or run scripts/system-deps.sh)"

CONFIG = """\
user {user}
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 1
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest file {data}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


class Mosquitto:
    """One ``mosquitto -c CONFIG`` process with its own data directory."""

    def __init__(self, root: Path, *, anonymous: bool = True) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            pytest.fail(MISSING, pytrace=False)
        self.binary = binary
        self.root = root
        self.anonymous = anonymous
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._started:
            self._launch(self.port)
            return
        self.port = start_on_free_port(self._launch, self.port)
        self._started = True

    def _launch(self, port: int) -> None:
        conf = self.root / "mosquitto.conf"
        # ``user``: run as whoever runs the tests (as root Mosquitto would otherwise switch to
        # user mosquitto, who cannot write the temporary data directory)
        text = CONFIG.format(user=getpass.getuser(), port=port, data=self.root)
        if not self.anonymous:  # and no password file: every client is refused
            text = text.replace("allow_anonymous true", "allow_anonymous false")
        conf.write_text(text)
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, self._proc, "mosquitto")
        except PortTaken:
            self.stop()
            raise
        self.port = port

    def stop(self) -> None:
        """SIGTERM (the database is saved), SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


class Publisher:
    """A plain paho client (its own network thread) publishing QoS 1 and waiting for
    every PUBACK: the test's independent view of the broker."""

    def __init__(self, port: int, client_id: str = "") -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self._ready = threading.Event()
        self.client.on_connect = lambda *a: self._ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError(f"publisher could not connect to 127.0.0.1:{port}")

    def publish(
        self, topic: str, payloads: list[bytes], properties: Properties | None = None
    ) -> None:
        infos = [self.client.publish(topic, p, qos=1, properties=properties) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=30)
            if not info.is_published():
                raise RuntimeError(f"no PUBACK for a message to {topic}")

    def publish_interleaved(self, topics: list[str], per_topic: int) -> None:
        """``per_topic`` messages on each topic, interleaved: payload ``TOPIC:N``."""
        infos = []
        for n in range(per_topic):
            for topic in topics:
                infos.append(self.client.publish(topic, f"{topic}:{n}".encode(), qos=1))
        for info in infos:
            info.wait_for_publish(timeout=60)
            if not info.is_published():
                raise RuntimeError("a message was not acknowledged by the broker")

    def close(self) -> None:
        close_client(self.client)


def close_client(client: mqtt.Client) -> None:
    """Disconnect a threaded paho client and close everything it opened: ``loop_stop``
    leaves its wake-up socket pair open; ``reinitialise`` closes it."""
    client.disconnect()
    client.loop_stop()
    client.reinitialise()
