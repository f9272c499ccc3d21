"""The faults a cut link cannot make, between the daemon and its broker, through the
fault-injecting proxy (tests/fixtures/faultproxy.py), against Kafka (Tansu), Redis Streams
and SQS (moto):

* ``latency``: every chunk each way delayed 0.2-2 s (a random pause per chunk) while the
  fault lasts;
* ``blackhole``: connections are accepted and never answered, new and existing ones; a
  connection that carried a request meanwhile stays dead after it (half-open), so the
  client must time the request out, drop the connection and dial again;
* ``reset``: every open connection reset, then every answer cut mid-way by a reset
  (RST) while the fault lasts; the requests themselves reach the broker.

Each run: records produced before the fault (the daemon mid-way through them), the fault
for a few seconds (60 s in the ``long`` variants), the proxy back to passing, the rest
produced. The daemon must keep running through it, abandon what hung and retry, and
deliver everything: nothing lost, no order violation where order is promised, duplicates
within the in-flight bound, a graceful stop afterwards. The verdict is recorded for
docs/reliability.md (``EVENTRUN_RELIABILITY_LOG``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests._daemon import Daemon
from tests.chaos._kit import sqs_remaining, sqs_send, unique, wait, write_chaos_app
from tests.chaos._ledger import app_yaml, duplicate_bound, plan, verdict
from tests.fixtures._ports import free_port
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.kafka import KafkaBroker, create_topic, produce
from tests.fixtures.moto import REGION, MotoServer
from tests.fixtures.redis import RedisServer

FAULTS = ["latency", "blackhole", "reset"]
SHORT_S = 5.0
LONG_S = 60.0
RECOVERY_LIMIT_S = 90.0
"""Healing to the last record handled: generous for a loaded CI machine; the figures
themselves (docs/reliability.md) are a few seconds."""

DURATIONS = [SHORT_S, pytest.param(LONG_S, marks=pytest.mark.long)]


@dataclass
class Rig:
    """One source's broker behind a proxy: how to feed it and when it has settled."""

    proxy: FaultProxy
    config: Path
    ledger: Path
    records: list[dict[str, str]]
    send: Callable[[list[dict[str, str]]], None]
    settled: Callable[[], bool]
    bound: int
    ordered: bool = True
    direct: bool = True
    """``send`` bypasses the proxy (so records arrive while the fault lasts)."""
    lease_s: float | None = None
    """The visibility timeout (SQS): a fault at least this long lets the visibility of
    every message the daemon holds run out (no extension reaches the endpoint), and
    each may come back once: those held at the fault are added to the bound."""


def _inject(proxy: FaultProxy, fault: str) -> None:
    if fault == "latency":
        proxy.delay_s, proxy.delay_max_s = 0.2, 2.0
        proxy.mode = "delay"
    elif fault == "blackhole":
        proxy.mode = "blackhole"
    else:
        proxy.reset_all()
        proxy.mode = "reset"


def _run(
    rig: Rig, name: str, fault: str, fault_s: float, *, first: int, before: int, mid: int
) -> None:
    """Produce ``first`` records, wait for ``before`` handled, inject ``fault`` for
    ``fault_s`` and meanwhile produce up to ``mid`` (when ``rig.direct``; else before
    the fault), heal, produce the rest, wait for all and settle; then the verdict."""
    proxy, ledger, records = rig.proxy, rig.ledger, rig.records
    daemon = Daemon(rig.config).start()
    try:
        rig.send(records[: first if rig.direct else mid])
        wait(lambda: unique(ledger) >= before, 90, f"{before} records handled")
        at_fault = unique(ledger)
        accepted = proxy.accepted
        _inject(proxy, fault)
        started = time.monotonic()
        if rig.direct:
            rig.send(records[first:mid])  # waiting behind the fault
        time.sleep(max(0.0, fault_s - (time.monotonic() - started)))  # the fault itself
        proxy.mode = "pass"
        healed_at = time.monotonic()
        during = unique(ledger) - at_fault
        rig.send(records[mid:])
        wait(lambda: unique(ledger) >= len(records), RECOVERY_LIMIT_S, "every record handled")
        recovered_s = time.monotonic() - healed_at
        wait(rig.settled, 90, "every record acknowledged")
        assert daemon.proc is not None
        assert daemon.proc.poll() is None, "the daemon died"
        poll_errors = len(daemon.events("source.poll_failed"))
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
    assert at_fault < (first if rig.direct else mid), "the run finished before the fault"
    bound, extra = rig.bound, {}
    if rig.lease_s is not None and fault_s >= rig.lease_s:
        held = (first if rig.direct else mid) - at_fault
        bound, extra = bound + held, {"held_at_fault": held}
    verdict(
        f"{name}-{fault}-{fault_s:.0f}s",
        records,
        ledger,
        handled_at_fault=at_fault,
        handled_during_fault=during,
        new_connections=proxy.accepted - accepted,
        resets=proxy.resets,
        poll_errors=poll_errors,
        recovered_s=recovered_s,
        **extra,
    ).check(max_duplicates=bound, ordered=rig.ordered)


# -- Redis Streams -----------------------------------------------------------------


@pytest.fixture
def redis_rig(
    tmp_path: Path, redis_server: RedisServer, fault_proxy: type[FaultProxy]
) -> Iterator[Rig]:
    proxy = fault_proxy(redis_server.port).start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    ledger = tmp_path / "app" / "ledger.jsonl"
    trigger = (
        "{redis_streams: {connection: main, streams: [pf], group: g, batch_size: 10,"
        " parallelization_factor: 2, key_field: key}}"
    )
    url = f"redis://127.0.0.1:{proxy.port}/0"
    config = write_chaos_app(
        tmp_path / "app",
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "DELAY": "0.02"},
        ),
    )

    def send(docs: list[dict[str, str]]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for doc in docs:
                pipe.xadd("pf", doc)  # type: ignore[arg-type]
            pipe.execute()

    try:
        yield Rig(
            proxy=proxy,
            config=config,
            ledger=ledger,
            records=plan(1200, keys=8),
            send=send,
            settled=lambda: client.xpending("pf", "g")["pending"] == 0,
            bound=duplicate_bound(
                disruptions=1, batch_size=10, shards=1, parallelization_factor=2, concurrency=2
            ),
        )
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.parametrize("fault_s", DURATIONS)
@pytest.mark.parametrize("fault", FAULTS)
def test_redis_streams_through_proxy_faults_loses_nothing(
    redis_rig: Rig, fault: str, fault_s: float
) -> None:
    _run(redis_rig, "redis-proxy", fault, fault_s, first=300, before=100, mid=900)


# -- Kafka (Tansu) -----------------------------------------------------------------


@pytest.fixture
def kafka_rig(tmp_path: Path, fault_proxy: type[FaultProxy]) -> Iterator[Rig]:
    broker = KafkaBroker()
    proxy = fault_proxy(broker.port)
    broker.advertised_port = proxy.port  # clients dial the proxy after bootstrapping
    broker.start()
    proxy.target = ("127.0.0.1", broker.port)  # the broker may have moved to another port
    proxy.start()
    try:
        records = plan(2400, keys=12, prefix="k")
        topic = asyncio.run(create_topic(broker.bootstrap, partitions=3))
        ledger = tmp_path / "ledger.jsonl"
        connections = {
            "kafka": {
                "main": {
                    "bootstrap_servers": f"127.0.0.1:{proxy.port}",
                    "session_timeout": "6s",
                    "heartbeat_interval": "1s",
                }
            }
        }
        trigger = (
            f"{{kafka: {{connection: main, topics: [{topic}], group_id: pf-{topic},"
            " batch_size: 20, maximum_batching_window: 0, parallelization_factor: 2,"
            " starting_position: TRIM_HORIZON}}"
        )
        config = write_chaos_app(
            tmp_path,
            app_yaml(
                connections=json.dumps(connections),
                trigger=trigger,
                environment={"LEDGER": str(ledger), "DELAY": "0.1"},
                concurrency=4,
            ),
        )

        def send(docs: list[dict[str, str]]) -> None:
            messages = [(None, doc["key"].encode(), json.dumps(doc).encode()) for doc in docs]
            asyncio.run(produce(broker.bootstrap, topic, messages))

        yield Rig(
            proxy=proxy,
            config=config,
            ledger=ledger,
            records=records,
            send=send,
            settled=lambda: True,  # commits are checked by the in-flight bound
            direct=False,  # the producer too dials the advertised address: the proxy
            bound=duplicate_bound(
                disruptions=1, batch_size=20, shards=3, parallelization_factor=2, concurrency=4
            ),
        )
    finally:
        broker.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("fault_s", DURATIONS)
@pytest.mark.parametrize("fault", FAULTS)
def test_kafka_through_proxy_faults_loses_nothing(
    kafka_rig: Rig, fault: str, fault_s: float
) -> None:
    _run(kafka_rig, "kafka-proxy", fault, fault_s, first=0, before=200, mid=2000)


@pytest.mark.kafka
@pytest.mark.long
def test_kafka_long_blackhole_with_a_short_request_timeout(kafka_rig: Rig) -> None:
    """After a silence longer than the session timeout the consumer dials new
    connections, whose handshake went out into the fault and waits out aiokafka's
    request timeout (40 s by default): ``request_timeout: 10s`` shortens that wait."""
    text = kafka_rig.config.read_text()
    short = text.replace(
        '"heartbeat_interval": "1s"', '"heartbeat_interval": "1s", "request_timeout": "10s"'
    )
    assert short != text
    kafka_rig.config.write_text(short)
    _run(
        kafka_rig,
        "kafka-proxy-request-timeout-10s",
        "blackhole",
        LONG_S,
        first=0,
        before=200,
        mid=2000,
    )


# -- SQS (moto) --------------------------------------------------------------------


@pytest.fixture
def sqs_rig(tmp_path: Path, fault_proxy: type[FaultProxy]) -> Iterator[Rig]:
    moto = MotoServer(free_port(), tmp_path / "moto.log")
    moto.start()
    try:
        proxy = fault_proxy(moto.port).start()
        queue = moto.create_queue()
        sqs = moto.boto3_client()

        def send(docs: list[dict[str, str]]) -> None:
            sqs_send(sqs, queue.url, docs)

        def settled() -> bool:
            return sqs_remaining(sqs, queue.url) == 0

        ledger = tmp_path / "ledger.jsonl"
        connections = {
            "sqs": {
                "main": {
                    "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                    "region": REGION,
                    "aws_access_key_id": "testing",
                    "aws_secret_access_key": "testing",
                }
            }
        }
        trigger = (
            f"{{sqs: {{connection: main, queue_url: '{queue.url}', batch_size: 5,"
            " visibility_timeout: 10s}}"
        )
        config = write_chaos_app(
            tmp_path / "app",
            app_yaml(
                connections=json.dumps(connections),
                trigger=trigger,
                environment={"LEDGER": str(ledger), "DELAY": "0.1"},
                concurrency=2,
            ),
        )
        yield Rig(
            proxy=proxy,
            config=config,
            ledger=ledger,
            records=plan(160, keys=4, prefix="q"),
            send=send,
            settled=settled,
            bound=duplicate_bound(
                disruptions=1, batch_size=5, shards=4, parallelization_factor=1, concurrency=2
            ),
            ordered=False,
            lease_s=10.0,
        )
    finally:
        moto.stop()


@pytest.mark.sqs
@pytest.mark.parametrize("fault_s", DURATIONS)
@pytest.mark.parametrize("fault", FAULTS)
def test_sqs_through_proxy_faults_loses_nothing(sqs_rig: Rig, fault: str, fault_s: float) -> None:
    _run(sqs_rig, "sqs-proxy", fault, fault_s, first=40, before=20, mid=120)
