"""Half-open connections to a Kafka broker (the fault proxy accepts requests and never
answers): the poller abandons the hung fetch and commit and retries on new connections
within seconds, where aiokafka alone waits out its 40 s request timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from eventrun.abc import Record
from eventrun.brokers import kafka as client_util
from eventrun.exceptions import SourceUnavailable
from eventrun.sources.kafka import KafkaPoller
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.kafka import KafkaBroker, create_topic, produce
from tests.sources.kafka.test_kafka import make_poller, poll_until

pytestmark = pytest.mark.kafka

RECOVERY_S = 15.0
"""Well under aiokafka's request timeout (40 s), which the fixes cut short."""


@pytest.fixture
def proxied(fault_proxy: type[FaultProxy]) -> Iterator[tuple[KafkaBroker, FaultProxy]]:
    """A broker that advertises the proxy, so every client connection goes through it."""
    broker = KafkaBroker()
    proxy = fault_proxy(broker.port)
    broker.advertised_port = proxy.port
    broker.start()
    proxy.target = ("127.0.0.1", broker.port)
    proxy.start()
    try:
        yield broker, proxy
    finally:
        broker.stop()


def _poller(broker: KafkaBroker, topic: str, **group: Any) -> KafkaPoller:
    poller = make_poller(broker, topics=[topic])
    poller.probe_interval_s = poller.probe_timeout_s = 1.0
    if group:
        poller._kwargs.update(group)
    return poller


async def test_a_fetch_hung_on_a_half_open_connection_is_abandoned(
    proxied: tuple[KafkaBroker, FaultProxy],
) -> None:
    broker, proxy = proxied
    topic = await create_topic(broker.bootstrap, partitions=1)
    await produce(broker.bootstrap, topic, [(0, None, b"before")])
    async with _poller(broker, topic) as poller:
        await poller.ack(await poll_until([poller], 1))
        proxy.mode = "blackhole"
        with anyio.fail_after(10):
            while True:  # the fetch hangs (nothing comes), until the probe finds it dead
                try:
                    assert await poller.poll(10) == []
                except SourceUnavailable:
                    break
        proxy.mode = "pass"  # connections that carried a request stay dead
        await produce(broker.bootstrap, topic, [(0, None, b"after")])
        got: list[Record] = []
        errors: list[str] = []
        with anyio.fail_after(RECOVERY_S):
            while not got:
                try:
                    got = list(await poller.poll(10))
                except SourceUnavailable as exc:
                    errors.append(str(exc))
        await poller.ack(got)
    assert [r.data for r in got] == [b"after"]
    assert all("stopped answering" in error for error in errors), errors


async def test_a_commit_abandoned_on_a_half_open_connection_is_retried_on_a_new_one(
    proxied: tuple[KafkaBroker, FaultProxy],
) -> None:
    broker, proxy = proxied
    topic = await create_topic(broker.bootstrap, partitions=1)
    await produce(broker.bootstrap, topic, [(0, None, b"r0"), (0, None, b"r1")])
    # a session long enough to outlive the fault: the member stays in the group
    async with _poller(broker, topic, session_timeout_ms=20_000, heartbeat_interval_ms=1000) as p:
        p.commit_timeout_s = 1.0
        records = await poll_until([p], 2)
        proxy.mode = "blackhole"
        with anyio.fail_after(10):
            await p.ack(records[:1])  # times out: kept pending, coordinator connection dropped
        assert p._pending
        proxy.mode = "pass"
        with anyio.fail_after(RECOVERY_S):
            while p._committed.get(records[1].token.tp, -1) < 2:  # type: ignore[attr-defined]
                await p.ack(records)
                await anyio.sleep(0.1)


async def test_probe_closes_only_connections_that_do_not_answer_and_stop_stays_quiet(
    proxied: tuple[KafkaBroker, FaultProxy],
) -> None:
    """And stopping right after (a fetch that failed on a closed connection is then in
    its retry pause): aiokafka's ``stop()`` leaked that task's CancelledError out of the
    poller's ``__aexit__``; it is logged now."""
    broker, proxy = proxied
    topic = await create_topic(broker.bootstrap, partitions=1)
    await produce(broker.bootstrap, topic, [(0, None, b"r0")])
    async with _poller(broker, topic) as poller:
        await poll_until([poller], 1)
        consumer = poller._require()
        assert await client_util.probe(consumer, 5.0) == 0
        proxy.mode = "blackhole"
        with anyio.fail_after(10):
            closed = await client_util.probe(consumer, 1.0)
        proxy.mode = "pass"
    assert closed >= 1


async def test_a_rejoin_after_a_long_silence_is_bounded_by_the_request_timeout(
    proxied: tuple[KafkaBroker, FaultProxy],
) -> None:
    """A fault longer than the session timeout: the member rejoins, and the new
    connection's handshake (ApiVersions, under aiokafka's client-wide connect lock) goes
    out into the fault and waits out ``request_timeout``: 40 s unless the connection
    sets a shorter one (``connections.kafka.NAME.request_timeout``)."""
    broker, proxy = proxied
    topic = await create_topic(broker.bootstrap, partitions=1)
    await produce(broker.bootstrap, topic, [(0, None, b"before")])
    async with _poller(broker, topic, request_timeout_ms=8000) as poller:
        await poller.ack(await poll_until([poller], 1))
        proxy.mode = "blackhole"
        with anyio.move_on_after(12):  # several session timeouts (FAST_GROUP: 2 s)
            while True:
                try:
                    await poller.poll(10)
                except SourceUnavailable:
                    await anyio.sleep(0.2)
        proxy.mode = "pass"
        await produce(broker.bootstrap, topic, [(0, None, b"after")])
        got: list[Record] = []
        with anyio.fail_after(RECOVERY_S):
            while not got:
                try:
                    got = list(await poller.poll(10))
                except SourceUnavailable:
                    await anyio.sleep(0.2)
        await poller.ack(got)
    assert [r.data for r in got] == [b"after"]


def test_the_connection_s_request_timeout_reaches_aiokafka() -> None:
    from eventrun.config import KafkaConnection

    kwargs = KafkaConnection(bootstrap_servers="b:9092", request_timeout="8s").aiokafka_kwargs()
    assert kwargs["request_timeout_ms"] == 8000
    assert "request_timeout_ms" not in KafkaConnection(bootstrap_servers="b:9092").aiokafka_kwargs()
