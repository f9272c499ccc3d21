"""The MQTT poller under the real dispatcher, against a private Mosquitto.

Delivery facts checked here: completeness and order per topic, PUBACK only after success
and only in receive order, retries then on_failure then PUBACK, a broker restart and a
graceful shutdown with nothing lost and nothing unfinished acknowledged.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import Mosquitto, Publisher, close_client
from mqtt_kit import (
    Ledger,
    SinkPublisher,
    collect,
    drain,
    first_occurrences_in_order,
    payload_of,
    poller,
    sink,
    unique,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from eventrun.exceptions import SourceUnavailable
from tests._dispatch_kit import Handler, running


async def test_mqtt_every_message_once_in_topic_order(
    broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("order")
    topics = [f"{prefix}/{i}" for i in range(4)]
    client_id = unique("c")
    ledger = Ledger()
    per_topic = 1500
    async with poller(broker, [f"{prefix}/+"], client_id, batch_size=50) as p:
        async with running(p, Handler(ledger.add), batch_size=50):
            await anyio.to_thread.run_sync(publisher.publish_interleaved, topics, per_topic)
            await ledger.wait(lambda: ledger.count >= per_topic * len(topics))
        assert p.statistics()["unacknowledged"] == 0
    for topic in topics:
        assert ledger.by_topic[topic] == [f"{topic}:{n}" for n in range(per_topic)]
    # every PUBACK reached the broker: the session has nothing to resend
    async with poller(broker, [f"{prefix}/+"], client_id) as again:
        assert await drain(again) == []


async def test_mqtt_puback_waits_for_every_earlier_message(
    broker: Mosquitto, publisher: Publisher
) -> None:
    """MQTT wants PUBACKs in receive order: acking the second and third of three leaves
    all three unacknowledged; acking the first then releases all three PUBACKs."""
    prefix = unique("prefix")
    client_id = unique("c")
    async with poller(broker, [f"{prefix}/#"], client_id) as p:
        for i in range(3):
            publisher.publish(f"{prefix}/{i}", [f"m{i}".encode()])
        records = await collect(p, 3)
        await p.ack(records[1:])
        assert p.statistics()["unacknowledged"] == len(records)
    async with poller(broker, [f"{prefix}/#"], client_id) as p:
        records = await collect(p, 3)
        assert [payload_of(r.plain_event()) for r in records[:3]] == ["m0", "m1", "m2"]
        assert all(r.plain_event()["dup"] for r in records[:3])
        assert all(r.attempt == 2 for r in records[:3])
        await p.ack([records[0]])
        await p.ack(records[1:])
        assert p.statistics()["unacknowledged"] == 0
    async with poller(broker, [f"{prefix}/#"], client_id) as p:
        assert await drain(p) == []


async def test_mqtt_puback_order_topic_acks_each_topic_at_once(
    broker: Mosquitto, publisher: Publisher
) -> None:
    """With ``puback_order: topic`` a message held on one topic does not hold back the
    PUBACK of a later message on another topic."""
    prefix = unique("bytopic")
    client_id = unique("c")
    async with poller(broker, [f"{prefix}/#"], client_id, puback_order="topic") as p:
        publisher.publish(f"{prefix}/a", [b"a0"])
        publisher.publish(f"{prefix}/b", [b"b0"])
        records: list[Any] = []
        with anyio.fail_after(10):
            while len(records) < 2:
                records += await p.poll(10)
        await p.ack(records[1:])
    async with poller(broker, [f"{prefix}/#"], client_id, puback_order="topic") as p:
        again = await drain(p)
    assert [payload_of(e) for e in again] == ["a0"]


async def test_mqtt_released_messages_come_back_on_the_next_connection(
    broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("release")
    client_id = unique("c")
    async with poller(broker, [f"{prefix}/t"], client_id) as p:
        publisher.publish(f"{prefix}/t", [b"a", b"b", b"c"])
        records = await collect(p, 3)
        await p.ack(records[:1])
        await p.release(records[1:], 0.0)
        await p.ack(records[1:])  # a released record is never acknowledged by this link
    async with poller(broker, [f"{prefix}/t"], client_id) as p:
        again = await drain(p)
    assert list(dict.fromkeys(payload_of(e) for e in again)) == ["b", "c"]


async def test_mqtt_poison_goes_to_on_failure_after_retries(
    broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("poison")
    topics = [f"{prefix}/{i}" for i in range(3)]
    dlq_topic = f"{prefix}-dlq"
    dlq: list[dict[str, Any]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    subscribed, arrived = threading.Event(), threading.Event()

    def on_dlq(client: Any, userdata: Any, message: Any) -> None:
        dlq.append(json.loads(message.payload))
        arrived.set()

    watcher.on_message = on_dlq
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    watcher.subscribe(dlq_topic, qos=1)
    poison = f"{topics[1]}:137"
    attempts = 0
    ledger = Ledger()

    def handle(records: list[dict[str, Any]]) -> None:
        nonlocal attempts
        if any(payload_of(r) == poison for r in records):
            attempts += len(records) == 1  # bisected down to the poison alone
            raise ValueError("poison")
        ledger.add(records)

    try:
        assert await anyio.to_thread.run_sync(subscribed.wait, 10)
        async with (
            sink(broker, dlq_topic) as out,
            poller(broker, [f"{prefix}/+"], unique("c")) as p,
        ):
            settings = {"batch_size": 20, "max_retry_attempts": 2, "bisect": True}
            async with running(p, Handler(handle), on_failure=SinkPublisher(out), **settings):
                await anyio.to_thread.run_sync(publisher.publish_interleaved, topics, 300)
                await ledger.wait(lambda: ledger.count >= 899)
                assert await anyio.to_thread.run_sync(arrived.wait, 20)
    finally:
        close_client(watcher)
    for topic in topics:
        expected = [f"{topic}:{n}" for n in range(300) if f"{topic}:{n}" != poison]
        assert ledger.by_topic[topic] == expected  # each other message once, in order
    assert attempts == 3  # alone once after bisecting, then 2 retries
    assert len(dlq) == 1
    failure = dlq[0]
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    [record] = failure["payload"]["Records"]
    assert payload_of(record) == poison
    assert failure["MQTTBatchInfo"]["topic"] == topics[1]


async def test_mqtt_broker_restart_loses_nothing(broker: Mosquitto, publisher: Publisher) -> None:
    prefix = unique("restart")
    topics = [f"{prefix}/{i}" for i in range(3)]
    ledger = Ledger()

    def slow(records: list[dict[str, Any]]) -> None:
        ledger.add(records)

    handler = Handler(slow, delay_s=0.02)
    # a window of 200: at most that many are handled while the broker restarts
    async with poller(broker, [f"{prefix}/+"], unique("c"), receive_maximum=200) as p:
        async with running(p, handler, batch_size=10):
            await anyio.to_thread.run_sync(publisher.publish_interleaved, topics, 500)
            await ledger.wait(lambda: ledger.count >= 300)
            await anyio.to_thread.run_sync(broker.restart)
            assert ledger.count < 1500, "the restart came too late to test anything"
            late = Publisher(broker.port)
            try:
                await anyio.to_thread.run_sync(late.publish_interleaved, [f"{prefix}/9"], 200)
            finally:
                late.close()
            await ledger.wait(lambda: len(ledger.seen()) >= 1700)
        assert p.reconnects >= 1
    for topic in [*topics, f"{prefix}/9"]:
        values = ledger.by_topic[topic]
        count = 200 if topic.endswith("/9") else 500
        assert set(values) == {f"{topic}:{n}" for n in range(count)}
        assert first_occurrences_in_order(values)


async def test_mqtt_graceful_shutdown_acknowledges_nothing_unfinished(
    broker: Mosquitto, publisher: Publisher
) -> None:
    prefix = unique("sigterm")
    client_id = unique("c")
    topic = f"{prefix}/t"
    handler = _SlowAfter(50)
    source = poller(broker, [topic], client_id)
    async with source as p, running(p, handler, batch_size=10, grace_s=0.3):
        payloads = [f"{topic}:{n}".encode() for n in range(200)]
        await anyio.to_thread.run_sync(publisher.publish, topic, payloads)
        with anyio.fail_after(20):
            await handler.stuck.wait()
    unfinished = handler.started - handler.finished
    assert unfinished, "no batch was cut short"
    async with poller(broker, [topic], client_id) as p:
        again = {payload_of(e) for e in await drain(p)}
    assert unfinished <= again
    assert handler.finished | again == {f"{topic}:{n}" for n in range(200)}


class _SlowAfter(Handler):
    """Handles the first ``n`` messages at once, then hangs (until cancelled)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.stuck = anyio.Event()

    async def __call__(self, payload: bytes) -> Any:
        names = {payload_of(r) for r in json.loads(payload)["Records"]}
        self.started |= names
        if len(self.started) > self.n:
            self.stuck.set()
            await anyio.sleep(60)
        self.finished |= names
        return await super().__call__(payload)


async def test_mqtt_unreachable_broker_is_source_unavailable() -> None:
    from tests.fixtures._ports import free_port

    class Nowhere:
        url = f"mqtt://127.0.0.1:{free_port()}"

    with pytest.raises(SourceUnavailable, match="cannot connect"):
        async with poller(Nowhere(), ["t"], unique("c")):  # type: ignore[arg-type]
            pass


async def test_mqtt_filter_criteria_match_the_json_payload(
    broker: Mosquitto, publisher: Publisher
) -> None:
    """Filters see the payload decoded under ``payload``; filtered-out messages are
    acknowledged all the same (nothing is resent)."""
    from eventrun.dispatch._filters import RecordFilter

    topic = f"{unique('filter')}/t"
    client_id = unique("c")
    ledger = Ledger()
    keep = RecordFilter([{"payload": {"kind": ["order"]}, "topic": [{"prefix": "filter-"}]}])
    docs = [json.dumps({"kind": "order" if n % 3 == 0 else "ping", "n": n}) for n in range(60)]
    async with (
        poller(broker, [topic], client_id) as p,
        running(p, Handler(ledger.add), filter=keep),
    ):
        await anyio.to_thread.run_sync(publisher.publish, topic, [d.encode() for d in docs])
        await ledger.wait(lambda: ledger.count >= 20)
    assert ledger.by_topic[topic] == [d for d in docs if '"order"' in d]
    async with poller(broker, [topic], client_id) as p:
        assert await drain(p) == []
