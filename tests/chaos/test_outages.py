"""Services going away mid-run: the input redis-server (persistent) stopped and started
again, the Kafka broker (Tansu, durable on S3) crashed and restarted twice, and a DLQ
sink's redis-server down while records fail to it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests._daemon import Daemon
from tests.chaos._kit import unique, wait, write_chaos_app
from tests.chaos._ledger import app_yaml, duplicate_bound, plan, verdict
from tests.fixtures.kafka import create_topic, durable_broker, produce
from tests.fixtures.moto import MotoServer
from tests.fixtures.redis import RedisServer, persistent_args


def _produce(client: redis.Redis, stream: str, docs: list[dict[str, str]]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for doc in docs:
            pipe.xadd(stream, doc)  # type: ignore[arg-type]
        pipe.execute()


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


@pytest.mark.redis
@pytest.mark.parametrize("how", ["stop", "kill", "shutdown-nosave"])
def test_redis_server_down_and_back_loses_nothing(tmp_path: Path, how: str) -> None:
    """The input redis-server (AOF, fsync always) goes away mid-run and comes back with its
    data: stopped cleanly, SIGKILLed, or ``SHUTDOWN NOSAVE``."""
    server = RedisServer(extra_args=persistent_args(tmp_path))
    server.start()
    records = plan(1200, keys=8)
    ledger = tmp_path / "app" / "ledger.jsonl"
    trigger = (
        "{redis_streams: {connection: main, streams: [down], group: g, batch_size: 10,"
        " parallelization_factor: 2, key_field: key}}"
    )
    config = write_chaos_app(
        tmp_path / "app",
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": server.url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "DELAY": "0.02"},
        ),
    )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    daemon = Daemon(config).start()
    try:
        _produce(client, "down", records[:800])
        wait(lambda: unique(ledger) >= 200, 60, "200 records handled")
        if how == "stop":
            server.stop()
        else:
            server.crash(how)
        stopped_at = unique(ledger)
        time.sleep(2.0)  # the outage itself: nothing to wait for while the server is gone
        server.start()
        client.connection_pool.disconnect()
        _produce(client, "down", records[800:])
        wait(lambda: unique(ledger) >= len(records), 60, "every record handled")
        wait(lambda: client.xpending("down", "g")["pending"] == 0, 30, "everything acked")
        poll_errors = len(daemon.events("source.poll_failed"))
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
        client.close()
        server.stop()
    assert stopped_at < len(records), "the run finished before the outage"
    verdict(
        f"redis-outage-{how}",
        records,
        ledger,
        handled_at_outage=stopped_at,
        poll_errors=poll_errors,
    ).check(
        max_duplicates=duplicate_bound(
            disruptions=1, batch_size=10, shards=1, parallelization_factor=2, concurrency=2
        )
    )


@pytest.mark.redis
def test_dlq_sink_down_records_wait_and_arrive(tmp_path: Path, redis_url: str) -> None:
    dlq = RedisServer()
    dlq.start()
    poisons = {i: {"key": f"p{i}", "poison": "exception", "fails": "99"} for i in (17, 55, 90, 133)}
    records = plan(160, keys=4, extra=poisons)
    good = [doc for doc in records if "poison" not in doc]
    poison_ids = {records[i]["id"] for i in poisons}
    ledger = tmp_path / "ledger.jsonl"
    trigger = (
        "{redis_streams: {connection: main, streams: [in], group: g, batch_size: 1,"
        " parallelization_factor: 2, key_field: key, maximum_retry_attempts: 0,"
        " on_failure: 'redis:dlq/failed'}}"
    )
    connections = {"redis": {"main": {"url": redis_url}, "dlq": {"url": dlq.url}}}
    config = write_chaos_app(
        tmp_path,
        app_yaml(
            connections=json.dumps(connections),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "ATTEMPTS": str(tmp_path)},
        ),
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    daemon = Daemon(config).start()
    try:
        dlq.stop()
        _produce(client, "in", records)
        # A lane whose poison cannot reach the DLQ stays blocked behind it: wait until the
        # sink has failed twice, then nothing bound for the DLQ may be acknowledged.
        daemon.wait_for(
            lambda e: e.get("event") == "sink.send_failed" and e.get("attempt", 0) >= 2, 30
        )
        pending = {row["message_id"] for row in client.xpending_range("in", "g", "-", "+", 1000)}
        [group] = client.xinfo_groups("in")
        entry_of = {fields["id"]: eid for eid, fields in client.xrange("in")}
        waiting = {entry_of[i] for i in poison_ids if entry_of[i] in pending}
        for i in poison_ids:
            delivered = _id(entry_of[i]) <= _id(group["last-delivered-id"])
            assert not delivered or entry_of[i] in pending, f"{i} acked while the DLQ was down"
        assert waiting, "no record was waiting for the DLQ"
        handled_while_down = unique(ledger)
        assert handled_while_down < len(good), "the lanes went on past a record not yet in the DLQ"
        dlq.start()
        dlq_client = redis.Redis.from_url(dlq.url, decode_responses=True)
        wait(lambda: dlq_client.xlen("failed") >= len(poisons), 60, "failure records in the DLQ")
        wait(lambda: unique(ledger) >= len(good), 60, "every good record handled")
        wait(lambda: client.xpending("in", "g")["pending"] == 0, 30, "input acked after the DLQ")
        failed = [json.loads(f["data"]) for _, f in dlq_client.xrange("failed")]
        dlq_client.close()
        send_failures = len(daemon.events("sink.send_failed"))
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
        client.close()
        dlq.stop()
    conditions = {doc["requestContext"]["condition"] for doc in failed}
    assert conditions == {"RetryAttemptsExhausted"}
    verdict(
        "dlq-down",
        good,
        ledger,
        parked_while_down=len(waiting),
        handled_while_down=handled_while_down,
        dlq_records=len(failed),
        sink_send_failures=send_failures,
    ).check(max_duplicates=0)  # the input stream never went down: nothing handled twice


@pytest.mark.kafka
async def test_kafka_broker_restarted_twice_with_its_data_loses_nothing(
    tmp_path: Path, moto: MotoServer
) -> None:
    """The broker keeps topics, records and committed offsets in Tansu's S3 storage (on
    moto): SIGKILLed mid-run, then stopped cleanly later, each time started again on the
    same port, the last records produced after the second restart. The daemon rides both
    out: every record handled, in order per key, duplicates within the in-flight bound
    (the committed offsets survived), the group's commits at the end of every partition."""
    broker = durable_broker(moto)
    broker.start()
    records = plan(1200, keys=12, prefix="d")
    ledger = tmp_path / "app" / "ledger.jsonl"
    try:
        topic = await create_topic(broker.bootstrap, partitions=3)

        ends: dict[TopicPartition, int] = {}

        async def send(docs: list[dict[str, str]]) -> None:
            batch = [(None, doc["key"].encode(), json.dumps(doc).encode()) for doc in docs]
            for meta in await produce(broker.bootstrap, topic, batch):
                tp = TopicPartition(topic, meta.partition)
                ends[tp] = max(ends.get(tp, 0), meta.offset + 1)

        await send(records[:1100])
        connections = {
            "kafka": {
                "main": {
                    "bootstrap_servers": broker.bootstrap,
                    "session_timeout": "2s",
                    "heartbeat_interval": "300ms",
                }
            }
        }
        trigger = (
            f"{{kafka: {{connection: main, topics: [{topic}], group_id: g-{topic},"
            " batch_size: 20, maximum_batching_window: 0, parallelization_factor: 2}}"
        )
        config = write_chaos_app(
            tmp_path / "app",
            app_yaml(
                connections=json.dumps(connections),
                trigger=trigger,
                environment={"LEDGER": str(ledger), "DELAY": "0.3"},
                concurrency=4,
            ),
        )
        daemon = Daemon(config).start()
        try:
            marks: list[int] = []
            for target, crash in ((150, True), (450, False)):
                await anyio.to_thread.run_sync(
                    lambda t=target: wait(lambda: unique(ledger) >= t, 90, f"{t} handled")
                )
                broker.kill() if crash else broker.stop()
                marks.append(unique(ledger))
                await anyio.sleep(2.0)  # the outage itself: nothing to wait for
                broker.start()
            await send(records[1100:])  # the twice restarted broker takes new records too
            await anyio.to_thread.run_sync(
                lambda: wait(lambda: unique(ledger) >= len(records), 120, "every record")
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=broker.bootstrap, group_id=f"g-{topic}", enable_auto_commit=False
            )
            await consumer.start()
            try:
                # the produced offsets, not ListOffsets: Tansu's S3 engine reports a high
                # watermark that lags the records it holds (57 after 100 records)
                parts = sorted(ends)
                done: dict[TopicPartition, int] = {}
                with anyio.move_on_after(60):
                    while done != ends:  # commits go out in the background: no event
                        done = {tp: await consumer.committed(tp) or 0 for tp in parts}
                        await anyio.sleep(0.2)
                assert done == ends, f"committed {done}, ends {ends}"
            finally:
                await consumer.stop()
            poll_errors = len(daemon.events("source.poll_failed"))
            assert await anyio.to_thread.run_sync(lambda: daemon.terminate(30)) == 0
        finally:
            daemon.stop()
    finally:
        broker.stop()
    # (by the second restart the daemon may have handled all it had read ahead: its
    # commits are what that restart must not lose)
    assert marks[0] < marks[1] <= 1100, "the broker crashed after the run"
    verdict(
        "kafka-durable-broker-restarts",
        records,
        ledger,
        handled_at_kill=marks[0],
        handled_at_stop=marks[1],
        poll_errors=poll_errors,
    ).check(
        max_duplicates=duplicate_bound(
            disruptions=2, batch_size=20, shards=3, parallelization_factor=2, concurrency=4
        )
    )
