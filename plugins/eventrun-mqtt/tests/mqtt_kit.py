"""Helpers of the MQTT plugin's tests: a poller for a broker, a ledger handler, waits."""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
from mqtt_broker import Mosquitto

from eventrun.abc import OutMessage, Record, SinkSpec, SourceSpec
from eventrun_mqtt.config import MqttConnection, MqttTrigger
from eventrun_mqtt.sink import MqttSink
from eventrun_mqtt.source import MqttPoller


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def trigger(broker: Mosquitto, topics: list[str], client_id: str, **extra: Any) -> MqttTrigger:
    return MqttTrigger(url=broker.url, topics=topics, client_id=client_id, **extra)


def poller(broker: Mosquitto, topics: list[str], client_id: str, **extra: Any) -> MqttPoller:
    cfg = trigger(broker, topics, client_id, **extra)
    return MqttPoller(SourceSpec(kind="mqtt", name="fn/mqtt[0]", function="fn", config=cfg))


def sink(broker: Mosquitto, topic: str) -> MqttSink:
    conn = MqttConnection(url=broker.url)
    spec = SinkSpec(url=f"mqtt:main/{topic}", kind="mqtt", target=f"main/{topic}", connection=conn)
    return MqttSink(spec)


class SinkPublisher:
    """The dispatcher's ``Publisher`` over an MqttSink (what the runtime's destination
    wrapper does, minus its retry loop)."""

    def __init__(self, target: MqttSink) -> None:
        self.sink = target

    async def publish(self, messages: list[OutMessage]) -> None:
        await self.sink.send(messages)


def payload_of(record: dict[str, Any]) -> str:
    return base64.b64decode(record["payload"]).decode()


class Ledger:
    """What a handler saw: payloads per topic in processing order."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[str]] = defaultdict(list)
        self.count = 0
        self._changed = anyio.Event()

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.by_topic[record["topic"]].append(payload_of(record))
        self.count += len(records)
        self._changed.set()

    def seen(self) -> set[str]:
        return {p for values in self.by_topic.values() for p in values}

    async def wait(self, predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
        with anyio.fail_after(timeout_s):
            while not predicate():
                self._changed = anyio.Event()
                with anyio.move_on_after(0.5):
                    await self._changed.wait()


def first_occurrences_in_order(values: list[str]) -> bool:
    """Payloads ``TOPIC:N``: each N appears for the first time only after every lower
    N did (order per topic, redeliveries allowed)."""
    expected = 0
    for value in values:
        n = int(value.rsplit(":", 1)[1])
        if n == expected:
            expected += 1
        elif n > expected:
            return False
    return True


async def collect(poller_: MqttPoller, count: int, quiet_s: float = 1.0) -> list[Record]:
    """At least ``count`` records, then whatever else arrives until ``quiet_s`` passes
    without one (QoS 1 may deliver a message twice), none acknowledged."""
    records: list[Record] = []
    with anyio.fail_after(20):
        while len(records) < count:
            records += await poller_.poll(100)
    while True:
        with anyio.move_on_after(quiet_s) as scope:
            more = await poller_.poll(100)
            while not more:
                more = await poller_.poll(100)
        if scope.cancelled_caught:
            return records
        records += more


async def drain(poller_: MqttPoller, quiet_s: float = 1.5) -> list[dict[str, Any]]:
    """Everything the broker sends a poller until ``quiet_s`` passes without a message."""
    out: list[dict[str, Any]] = []
    while True:
        with anyio.move_on_after(quiet_s) as scope:
            records = await poller_.poll(1000)
            while not records:
                records = await poller_.poll(1000)
        if scope.cancelled_caught:
            return out
        out.extend(r.plain_event() for r in records)
        await poller_.ack(records)
