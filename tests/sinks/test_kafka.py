"""The kafka sink against a real broker (Tansu on loopback)."""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import pytest
from aiokafka import AIOKafkaConsumer

from eventrun.abc import OutMessage, SinkSpec
from eventrun.config import KafkaConnection
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun.sinks.kafka import KafkaSink, create
from tests.fixtures._ports import free_port
from tests.fixtures.kafka import KafkaBroker, create_topic

pytestmark = pytest.mark.kafka


def make_sink(bootstrap: str, topic: str) -> KafkaSink:
    spec = SinkSpec(
        url=f"kafka:main/{topic}",
        kind="kafka",
        target=f"main/{topic}",
        connection=KafkaConnection(bootstrap_servers=bootstrap),
    )
    sink = create(spec)
    assert isinstance(sink, KafkaSink)
    return sink


async def read_all(bootstrap: str, topic: str, count: int) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[object] = []
    try:
        with anyio.fail_after(20):
            while len(got) < count:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(messages)
    finally:
        await consumer.stop()
    return got


async def test_round_trip_keeps_key_value_headers_and_key_order(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=3)
    messages = [
        OutMessage(
            b'{"n": %d}' % i, key=f"key-{i % 2}", attributes={"source": "orders", "i": str(i)}
        )
        for i in range(6)
    ]
    messages.append(OutMessage(b'{"n": "no-key"}'))
    async with make_sink(kafka_broker.bootstrap, topic) as sink:
        await sink.send(messages)
        await sink.send([])
    got = await read_all(kafka_broker.bootstrap, topic, len(messages))
    assert len(got) == len(messages)
    by_value = {m.value: m for m in got}  # type: ignore[attr-defined]
    for sent in messages:
        record = by_value[sent.payload]
        assert record.key == (None if sent.key is None else sent.key.encode())
        assert list(record.headers) == [(k, v.encode()) for k, v in sent.attributes.items()]
    for key in ("key-0", "key-1"):
        same_key = [m for m in got if m.key == key.encode()]  # type: ignore[attr-defined]
        assert len({m.partition for m in same_key}) == 1  # type: ignore[attr-defined]
        assert [m.value for m in same_key] == [  # type: ignore[attr-defined]
            s.payload for s in messages if s.key == key
        ]


async def test_unreachable_cluster_raises_sink_unavailable() -> None:
    sink = make_sink(f"127.0.0.1:{free_port()}", "t")
    sink.send_timeout_s = 5
    async with sink:  # starting does not fail: the DLQ may come up later
        with pytest.raises(SinkUnavailable, match="kafka:main/t"):
            await sink.send([OutMessage(b"{}")])


async def test_send_after_broker_restart(kafka_broker: KafkaBroker) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    async with make_sink(kafka_broker.bootstrap, topic) as sink:
        sink.send_timeout_s = 3
        await sink.send([OutMessage(b"1")])
        kafka_broker.stop()
        with pytest.raises(SinkUnavailable):
            await sink.send([OutMessage(b"2")])
        kafka_broker.start()
        await create_topic(kafka_broker.bootstrap, partitions=1, name=topic)
        with anyio.fail_after(30):
            while True:
                try:
                    await sink.send([OutMessage(b"3")])
                    break
                except SinkUnavailable:
                    pass
    got = await read_all(kafka_broker.bootstrap, topic, 1)
    values = [m.value for m in got]  # type: ignore[attr-defined]
    # "1" went with the old broker's memory; "2" may still arrive (the producer kept it
    # queued after send gave up): at-least-once, the caller resends it anyway.
    assert values[-1] == b"3"
    assert set(values) <= {b"2", b"3"}


def test_target_must_name_a_topic() -> None:
    with pytest.raises(ConfigError, match="kafka:CONNECTION/TOPIC"):
        create(SinkSpec(url="kafka:main", kind="kafka", target="main", connection=None))


def test_connection_without_bootstrap_servers_is_a_config_error() -> None:
    spec = SinkSpec(
        url="kafka:main/t",
        kind="kafka",
        target="main/t",
        connection=SimpleNamespace(bootstrap_servers=""),
    )
    with pytest.raises(ConfigError, match="kafka:main/t: the Kafka connection has no bootstrap"):
        create(spec)


async def test_message_over_the_request_size_is_rejected(kafka_broker: KafkaBroker) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    async with make_sink(kafka_broker.bootstrap, topic) as sink:
        too_big = b"x" * (1024 * 1024 + 1)  # over the producer's default max_request_size
        with pytest.raises(SinkRejected, match="MessageSizeTooLargeError"):
            await sink.send([OutMessage(payload=too_big)])
        await sink.send([OutMessage(payload=b"fits")])  # the producer is still usable
    assert [m.value for m in await read_all(kafka_broker.bootstrap, topic, 1)] == [b"fits"]  # type: ignore[attr-defined]
