"""The ``rabbitmq:`` sink: confirmed, persistent publishes; refusals and outages."""

from __future__ import annotations

import anyio
import pytest
from rabbitmq_kit import channel, declare, ready_count
from rabbitmq_server import RabbitServer

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun_rabbitmq.config import RabbitMQConnection
from eventrun_rabbitmq.sink import RabbitMQSink, create

pytestmark = pytest.mark.rabbitmq


def sink(url: str, target: str) -> RabbitMQSink:
    spec = SinkSpec(
        url=f"rabbitmq:{target}",
        kind="rabbitmq",
        target=target,
        connection=RabbitMQConnection(url=url),
    )
    return create(spec)


async def test_publishes_confirmed_persistent_messages_in_order(
    rabbit_url: str, queue_name: str
) -> None:
    await declare(rabbit_url, queue_name)
    messages = [
        OutMessage(f'{{"n": {i}}}'.encode(), key=f"k{i % 3}", attributes={"trigger": "t"})
        for i in range(200)
    ]
    async with sink(rabbit_url, f"main/{queue_name}") as s:
        await s.send(messages)
        await s.send([])
    assert await ready_count(rabbit_url, queue_name) == 200
    async with channel(rabbit_url) as ch:
        got = []
        for _ in range(200):
            message = await ch.basic_get(queue_name, no_ack=True)
            got.append(message)
    assert [m.body for m in got] == [m.payload for m in messages]
    props = got[4].header.properties
    assert props.delivery_mode == 2
    assert props.content_type == "application/json"
    assert props.headers == {"trigger": "t", "key": "k1"}


async def test_named_exchange_and_routing_key(rabbit_url: str, queue_name: str) -> None:
    await declare(rabbit_url, queue_name)
    async with channel(rabbit_url) as ch:
        await ch.exchange_declare("events", exchange_type="topic", durable=True)
        await ch.queue_bind(queue_name, "events", routing_key="orders.*")
    async with sink(rabbit_url, "main/events/orders.created") as s:
        await s.send([OutMessage(b"{}")])
    assert await ready_count(rabbit_url, queue_name) == 1


async def test_unroutable_message_is_rejected(rabbit_url: str, queue_name: str) -> None:
    async with sink(rabbit_url, f"main/{queue_name}") as s:  # no such queue
        with pytest.raises(SinkRejected, match="no queue is bound"):
            await s.send([OutMessage(b"{}")])


async def test_missing_exchange_is_rejected_then_the_sink_recovers(
    rabbit_url: str, queue_name: str
) -> None:
    await declare(rabbit_url, queue_name)
    async with sink(rabbit_url, "main/nope/rk") as s:
        with pytest.raises(SinkRejected, match="declare the exchange"):
            await s.send([OutMessage(b"{}")])
    async with sink(rabbit_url, f"main/{queue_name}") as s:
        await s.send([OutMessage(b"{}")])
    assert await ready_count(rabbit_url, queue_name) == 1


async def test_broker_down_is_unavailable_and_a_retry_after_restart_delivers(
    rabbit: RabbitServer, queue_name: str
) -> None:
    rabbit.start()
    await declare(rabbit.url, queue_name)
    async with sink(rabbit.url, f"main/{queue_name}") as s:
        await s.send([OutMessage(b"1")])
        await anyio.to_thread.run_sync(rabbit.stop)
        try:
            with pytest.raises(SinkUnavailable) as info:
                await s.send([OutMessage(b"2")])
            assert "guest:guest" not in str(info.value)
        finally:
            await anyio.to_thread.run_sync(rabbit.start)
        await s.send([OutMessage(b"2")])
    assert await ready_count(rabbit.url, queue_name) == 2


@pytest.mark.parametrize("target", ["main", "main/", "main//rk"])
def test_bad_targets_are_config_errors(target: str) -> None:
    with pytest.raises(ConfigError, match="rabbitmq:CONNECTION/QUEUE"):
        sink("amqp://h/", target)
