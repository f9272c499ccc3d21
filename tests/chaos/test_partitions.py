"""Network partitions made by the kernel: the daemon runs in its own network namespace and
the link to its broker is cut mid-run (tests/fixtures/netns.py); and the faults a cut
cannot make, through a fault-injecting proxy (tests/fixtures/faultproxy.py). Nothing is lost, order
holds per key, duplicates stay within the in-flight bound, and the daemon recovers by
itself once the link is back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
import redis

from tests._daemon import Daemon
from tests.chaos._kit import sqs_remaining, sqs_send, unique, wait, write_chaos_app
from tests.chaos._ledger import app_yaml, duplicate_bound, plan, verdict
from tests.fixtures._ports import free_port
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.kafka import KafkaBroker, create_topic, produce
from tests.fixtures.moto import REGION, MotoServer
from tests.fixtures.netns import Partition
from tests.fixtures.redis import RedisServer


def _produce(client: redis.Redis, stream: str, docs: list[dict[str, str]]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for doc in docs:
            pipe.xadd(stream, doc)  # type: ignore[arg-type]
        pipe.execute()


@pytest.mark.redis
@pytest.mark.parametrize("outage_s", [5.0, pytest.param(60.0, marks=pytest.mark.long)])
def test_redis_streams_link_cut_mid_run_loses_nothing(
    tmp_path: Path, partition: Partition, outage_s: float
) -> None:
    server = RedisServer(
        extra_args=[
            *("--save", "", "--appendonly", "no"),
            *("--bind", "127.0.0.1", partition.host_ip, "--protected-mode", "no"),
        ]
    )
    server.start()
    records = plan(1200, keys=8)
    ledger = tmp_path / "app" / "ledger.jsonl"
    url = f"redis://{partition.host_ip}:{server.port}/0"
    trigger = (
        "{redis_streams: {connection: main, streams: [cut], group: g, batch_size: 10,"
        " parallelization_factor: 2, key_field: key}}"
    )
    config = write_chaos_app(
        tmp_path / "app",
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "DELAY": "0.02"},
        ),
    )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    daemon = Daemon(config, command_prefix=partition.command_prefix).start()
    try:
        _produce(client, "cut", records[:800])
        wait(lambda: unique(ledger) >= 200, 60, "200 records handled")
        partition.cut()
        cut_at = unique(ledger)
        time.sleep(outage_s)  # the partition itself: nothing to wait for while it lasts
        during = unique(ledger) - cut_at
        partition.heal()
        healed_at = time.monotonic()
        _produce(client, "cut", records[800:])
        wait(lambda: unique(ledger) >= len(records), 120, "every record handled after healing")
        recovered_s = time.monotonic() - healed_at
        wait(lambda: client.xpending("cut", "g")["pending"] == 0, 60, "everything acked")
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
        client.close()
        server.stop()
    assert cut_at < len(records), "the run finished before the partition"
    verdict(
        f"redis-partition-{outage_s:.0f}s",
        records,
        ledger,
        handled_at_cut=cut_at,
        handled_during_cut=during,  # from the dispatcher's buffer: fetched before the cut
        recovered_s=recovered_s,
    ).check(
        max_duplicates=duplicate_bound(
            disruptions=1, batch_size=10, shards=1, parallelization_factor=2, concurrency=2
        )
    )


@pytest.mark.kafka
@pytest.mark.parametrize("outage_s", [5.0, pytest.param(60.0, marks=pytest.mark.long)])
async def test_kafka_link_cut_mid_run_loses_nothing(
    tmp_path: Path, partition: Partition, outage_s: float
) -> None:
    broker = KafkaBroker(host=partition.host_ip)
    broker.start()
    try:
        records = plan(1200, keys=12, prefix="k")
        topic = await create_topic(broker.bootstrap, partitions=3)
        messages = [(None, doc["key"].encode(), json.dumps(doc).encode()) for doc in records]
        await produce(broker.bootstrap, topic, messages[:800])
        ledger = tmp_path / "ledger.jsonl"
        connections = {
            "kafka": {
                "main": {
                    "bootstrap_servers": broker.bootstrap,
                    "session_timeout": "6s",
                    "heartbeat_interval": "1s",
                }
            }
        }
        trigger = (
            f"{{kafka: {{connection: main, topics: [{topic}], group_id: cut-{topic},"
            " batch_size: 20, maximum_batching_window: 0, parallelization_factor: 2}}"
        )
        config = write_chaos_app(
            tmp_path,
            app_yaml(
                connections=json.dumps(connections),
                trigger=trigger,
                environment={"LEDGER": str(ledger), "DELAY": "0.03"},
                concurrency=4,
            ),
        )
        daemon = Daemon(config, command_prefix=partition.command_prefix)
        await anyio.to_thread.run_sync(daemon.start)
        try:
            await anyio.to_thread.run_sync(
                lambda: wait(lambda: unique(ledger) >= 200, 90, "200 records handled")
            )
            partition.cut()
            cut_at = unique(ledger)
            await anyio.sleep(outage_s)  # the partition itself: nothing to wait for meanwhile
            partition.heal()
            healed_at = time.monotonic()
            await produce(broker.bootstrap, topic, messages[800:])
            await anyio.to_thread.run_sync(
                lambda: wait(lambda: unique(ledger) >= len(records), 180, "every record handled")
            )
            recovered_s = time.monotonic() - healed_at
            assert await anyio.to_thread.run_sync(daemon.terminate, 30) == 0
        finally:
            daemon.stop()
    finally:
        broker.stop()
    assert cut_at < len(records), "the run finished before the partition"
    verdict(
        f"kafka-partition-{outage_s:.0f}s",
        records,
        ledger,
        handled_at_cut=cut_at,
        recovered_s=recovered_s,
    ).check(
        max_duplicates=duplicate_bound(
            disruptions=1, batch_size=20, shards=3, parallelization_factor=2, concurrency=4
        )
    )


@pytest.mark.sqs
@pytest.mark.parametrize("outage_s", [5.0, pytest.param(60.0, marks=pytest.mark.long)])
def test_sqs_link_cut_mid_run_loses_nothing(
    tmp_path: Path, partition: Partition, outage_s: float
) -> None:
    """A standard queue (no order promised): everything handled and deleted after the
    link comes back; a message whose delete hung across the cut comes back once its
    visibility timeout runs out and counts as a duplicate."""
    moto = MotoServer(free_port(), tmp_path / "moto.log", host=partition.host_ip)
    moto.start()
    try:
        records = plan(120, keys=4, prefix="q")
        queue = moto.create_queue()
        sqs = moto.boto3_client()

        def send(docs: list[dict[str, str]]) -> None:
            sqs_send(sqs, queue.url, docs)

        def queue_empty() -> bool:
            return sqs_remaining(sqs, queue.url) == 0

        send(records[:80])
        ledger = tmp_path / "ledger.jsonl"
        connections = {
            "sqs": {
                "main": {
                    "endpoint_url": moto.endpoint_url,
                    "region": REGION,
                    "aws_access_key_id": "testing",
                    "aws_secret_access_key": "testing",
                }
            }
        }
        trigger = (
            f"{{sqs: {{connection: main, queue_url: '{queue.url}', batch_size: 5,"
            " visibility_timeout: 4s}}"
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
        daemon = Daemon(config, command_prefix=partition.command_prefix).start()
        try:
            wait(lambda: unique(ledger) >= 20, 60, "20 records handled")
            partition.cut()
            cut_at = unique(ledger)
            time.sleep(outage_s)  # the partition itself: nothing to wait for while it lasts
            partition.heal()
            healed_at = time.monotonic()
            send(records[80:])
            wait(lambda: unique(ledger) >= len(records), 180, "every record handled")
            recovered_s = time.monotonic() - healed_at
            wait(queue_empty, 120, "every message deleted")
            assert daemon.terminate(30) == 0
        finally:
            daemon.stop()
    finally:
        moto.stop()
    assert cut_at < len(records), "the run finished before the partition"
    bound = duplicate_bound(
        disruptions=1, batch_size=5, shards=4, parallelization_factor=1, concurrency=2
    )
    verdict(
        f"sqs-partition-{outage_s:.0f}s",
        records,
        ledger,
        handled_at_cut=cut_at,
        recovered_s=recovered_s,
    ).check(max_duplicates=bound, ordered=False)


@pytest.mark.redis
def test_redis_streams_half_open_connections_and_resets_lose_nothing(
    tmp_path: Path, redis_server: RedisServer, fault_proxy: type[FaultProxy]
) -> None:
    """Through a proxy: first every connection swallows requests (a half-open peer) for
    longer than the client's read timeout, then every connection is reset mid-stream.
    The source abandons the hung calls, reconnects, and delivers everything."""
    proxy = fault_proxy(redis_server.port).start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    records = plan(900, keys=6)
    ledger = tmp_path / "app" / "ledger.jsonl"
    trigger = (
        "{redis_streams: {connection: main, streams: [half], group: g, batch_size: 10,"
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
    daemon = Daemon(config).start()
    try:
        _produce(client, "half", records[:300])
        wait(lambda: unique(ledger) >= 100, 60, "100 records handled")
        proxy.mode = "blackhole"
        accepted = proxy.accepted
        _produce(client, "half", records[300:600])
        # the poller's read timeout (block + 5 s) must fire: it dials a new connection
        wait(lambda: proxy.accepted > accepted, 30, "a new connection after the hung call")
        proxy.mode = "pass"
        wait(lambda: unique(ledger) >= 600, 90, "600 records handled after the half-open spell")
        _produce(client, "half", records[600:])
        resets = proxy.reset_all()
        wait(lambda: unique(ledger) >= len(records), 90, "every record handled after resets")
        wait(lambda: client.xpending("half", "g")["pending"] == 0, 60, "everything acked")
        errors = len(daemon.events("source.poll_failed"))
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
        client.close()
    assert resets >= 1
    verdict("redis-half-open", records, ledger, resets=resets, poll_errors=errors).check(
        max_duplicates=duplicate_bound(
            disruptions=2, batch_size=10, shards=1, parallelization_factor=2, concurrency=2
        )
    )
