"""The kafka poller against a real broker (Tansu on loopback), driven directly."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import pytest
import structlog
from aiokafka import errors as kafka_errors
from pydantic import SecretStr

from eventrun.abc import Record, SourceSpec
from eventrun.brokers import kafka as _kafka_client
from eventrun.config import KafkaConnection, KafkaTrigger
from eventrun.exceptions import ConfigError, SourceAuthError, SourceUnavailable
from eventrun.sources.kafka import KafkaPoller, create
from tests.fixtures.kafka import FAST_GROUP, KafkaBroker, create_topic, produce, unique_name

pytestmark = pytest.mark.kafka


@dataclass
class FastConnection:
    """The real connection model's kwargs plus quick group joins (duck-typed)."""

    bootstrap_servers: str
    extra: dict[str, Any] = field(default_factory=lambda: dict(FAST_GROUP))

    def aiokafka_kwargs(self, base_dir: Path | None = None) -> dict[str, object]:
        base = KafkaConnection(bootstrap_servers=self.bootstrap_servers).aiokafka_kwargs(base_dir)
        return {**base, **self.extra}


def make_poller(broker: KafkaBroker, group: str | None = None, **trigger: Any) -> KafkaPoller:
    trigger.setdefault("starting_position", "TRIM_HORIZON")
    config = KafkaTrigger(connection="main", group_id=group or unique_name("g"), **trigger)
    spec = SourceSpec(
        kind="kafka",
        name="fn/kafka[0]",
        function="fn",
        config=config,
        connection=FastConnection(broker.bootstrap),
    )
    poller = create(spec)
    assert isinstance(poller, KafkaPoller)
    return poller


async def poll_until(
    pollers: Sequence[KafkaPoller], count: int, timeout_s: float = 20
) -> list[Record]:
    """Poll the pollers in turn until ``count`` records came back (fails on timeout)."""
    got: list[Record] = []
    with anyio.fail_after(timeout_s):
        while len(got) < count:
            for poller in pollers:
                got.extend(await poller.poll(100))
    return got


def by_shard(records: Sequence[Record]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r.shard, []).append(r.plain_event()["offset"])
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_records_have_lambdas_shape_and_keep_partition_order(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=3)
    sent = [
        (0, b"k0", b'{"n": 0}'),
        (1, None, b"plain"),
        (2, b"\xff\xfe", b"\x00\x01binary"),
        (0, b"k0", b'{"n": 3}'),
        (1, b"k1", None),
        (0, "ключ".encode(), b'{"n": 5}'),
    ]
    headers = [("trace", b"abc"), ("trace", b"\xff"), ("empty", b"")]
    metas = await produce(kafka_broker.bootstrap, topic, sent, headers=headers)
    async with make_poller(kafka_broker, topics=[topic]) as poller:
        first = await poll_until([poller], 2)
        rest = await poll_until([poller], len(sent) - len(first))
    records = first + rest
    assert by_shard(records) == {f"{topic}-0": [0, 1, 2], f"{topic}-1": [0, 1], f"{topic}-2": [0]}

    index = {(m.partition, m.offset): (msg, m) for msg, m in zip(sent, metas, strict=True)}
    for record in records:
        sent_json = json.loads(msgspec.json.encode(record.event))  # what a batch carries
        event = record.plain_event()  # what a filter or an inline handler sees
        assert record.event is event
        (partition, key, value), meta = index[(event["partition"], event["offset"])]
        expected: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": meta.offset,
            "timestamp": meta.timestamp,
            "timestampType": "CREATE_TIME",
        }
        if key is not None:
            expected["key"] = b64(key)
        if value is not None:
            expected["value"] = b64(value)
        expected["headers"] = [{"trace": [97, 98, 99]}, {"trace": [255]}, {"empty": []}]
        assert event == expected
        assert list(event) == list(expected)  # Lambda's field order
        assert sent_json == expected
        assert list(sent_json) == list(expected)
        assert record.shard == f"{topic}-{partition}"
        assert record.item_id == {"partition": f"{topic}-{partition}", "offset": meta.offset}
        assert record.data == (value or b"")
        assert record.data_key == "value"
        assert record.timestamp == meta.timestamp / 1000
        assert abs(record.timestamp - time.time()) < 60
    keys = {(r.plain_event()["partition"], r.plain_event()["offset"]): r.key for r in records}
    assert keys == {
        (0, 0): "k0",
        (1, 0): None,
        (2, 0): b64(b"\xff\xfe"),
        (0, 1): "k0",
        (1, 1): "k1",
        (0, 2): "ключ",
    }

    event = poller.batch_event(records)
    assert list(event) == ["eventSource", "bootstrapServers", "records"]
    assert event["eventSource"] == "SelfManagedKafka"
    assert event["bootstrapServers"] == kafka_broker.bootstrap
    assert "eventSourceArn" not in event
    assert {k: [e["offset"] for e in v] for k, v in event["records"].items()} == by_shard(records)

    p0 = [r for r in records if r.shard == f"{topic}-0"]
    info = poller.batch_info(p0)["KafkaBatchInfo"]
    assert info["batchSize"] == 3
    assert info["bootstrapServers"] == kafka_broker.bootstrap
    assert info["payloadSize"] == len(msgspec.json.encode(poller.batch_event(p0)))
    ts = [m.timestamp for m in metas if m.partition == 0]
    first_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts[0] / 1000))
    assert info["recordsInfo"] == {
        f"{topic}-0": {
            "firstRecordOffset": "0",
            "lastRecordOffset": "2",
            "firstRecordTimestamp": f"{first_iso}.{ts[0] % 1000:03d}Z",
            "lastRecordTimestamp": info["recordsInfo"][f"{topic}-0"]["lastRecordTimestamp"],
        }
    }
    assert info["recordsInfo"][f"{topic}-0"]["lastRecordTimestamp"].endswith(
        f".{ts[-1] % 1000:03d}Z"
    )


async def test_ack_commits_the_prefix_and_a_new_poller_resumes_after_it(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=2)
    await produce(kafka_broker.bootstrap, topic, [(i % 2, None, b"%d" % i) for i in range(10)])
    group = unique_name("g")
    async with make_poller(kafka_broker, group, topics=[topic]) as poller:
        records = await poll_until([poller], 10)
        stats = poller.statistics()
        assert stats["offset_lag"] == 10
        assert stats[f"offset_lag.{topic}-0"] == 5
        p0 = [r for r in records if r.shard == f"{topic}-0"]
        p1 = [r for r in records if r.shard == f"{topic}-1"]
        await poller.ack(p0[:3] + p1[:1])
        stats = poller.statistics()
        assert stats[f"offset_lag.{topic}-0"] == 2
        assert stats[f"offset_lag.{topic}-1"] == 4
        assert stats["offset_lag"] == 6
        assert 0 <= stats["iterator_age_s"] < 60
        assert stats["partitions"] == 2
    async with make_poller(kafka_broker, group, topics=[topic]) as again:
        resumed = await poll_until([again], 6)
        assert by_shard(resumed) == {f"{topic}-0": [3, 4], f"{topic}-1": [1, 2, 3, 4]}
        assert await again.poll(100) == []


async def test_release_seeks_back_so_records_come_again(kafka_broker: KafkaBroker) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"%d" % i) for i in range(4)])
    async with make_poller(kafka_broker, topics=[topic]) as poller:
        records = await poll_until([poller], 4)
        await poller.ack(records[:1])
        await poller.release(records[1:], 0)
        again = await poll_until([poller], 3)
        assert [r.plain_event()["offset"] for r in again] == [1, 2, 3]
        assert [r.data for r in again] == [b"1", b"2", b"3"]


async def test_ack_and_release_ignore_what_a_handler_did_to_the_events(
    kafka_broker: KafkaBroker,
) -> None:
    """An inline handler gets the records' events themselves (eventrun.dispatch._shared_events);
    a successful one may have changed them before the records are acknowledged."""
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"%d" % i) for i in range(6)])
    group = unique_name("g")
    async with make_poller(kafka_broker, group, topics=[topic]) as poller:
        records = await poll_until([poller], 6)
        for record in records:
            record.plain_event()["offset"] = 10_000
        await poller.release(records[3:], 0)
        again = await poll_until([poller], 3)
        assert [r.item_id["offset"] for r in again] == [3, 4, 5]  # type: ignore[index]
        await poller.ack(records[:2])
    async with make_poller(kafka_broker, group, topics=[topic]) as resumed:
        assert by_shard(await poll_until([resumed], 4)) == {f"{topic}-0": [2, 3, 4, 5]}


async def test_starting_positions(kafka_broker: KafkaBroker) -> None:
    # Tansu finds offsets by the time records were appended (Kafka by their CreateTime,
    # equal here): leave a gap around the AT_TIMESTAMP instant.
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"old0")])
    await anyio.sleep(0.05)
    stamp = time.time()
    await anyio.sleep(0.05)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"old1"), (0, None, b"old2")])
    await anyio.sleep(0.05)
    after_all = time.time()

    async with make_poller(kafka_broker, topics=[topic]) as horizon:
        assert [r.data for r in await poll_until([horizon], 3)] == [b"old0", b"old1", b"old2"]

    at_ts = make_poller(
        kafka_broker,
        topics=[topic],
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=stamp,
    )
    async with at_ts:
        assert [r.data for r in await poll_until([at_ts], 2)] == [b"old1", b"old2"]

    late = make_poller(
        kafka_broker,
        topics=[topic],
        starting_position="AT_TIMESTAMP",
        starting_position_timestamp=after_all,
    )
    latest_group = unique_name("g")
    latest = make_poller(kafka_broker, latest_group, topics=[topic], starting_position="LATEST")
    async with late, latest:
        assert await late.poll(10) == []
        assert await latest.poll(10) == []
        await produce(kafka_broker.bootstrap, topic, [(0, None, b"new")])
        assert [r.data for r in await poll_until([latest], 1)] == [b"new"]
        assert [r.data for r in await poll_until([late], 1)] == [b"new"]

    # The group exists now (its start position was committed): StartingPosition is ignored.
    again = make_poller(kafka_broker, latest_group, topics=[topic], starting_position="LATEST")
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"while-away")])
    async with again:
        assert [r.data for r in await poll_until([again], 2)] == [b"new", b"while-away"]


async def test_topic_pattern_subscribes_matching_topics(kafka_broker: KafkaBroker) -> None:
    prefix = unique_name("pat")
    a = await create_topic(kafka_broker.bootstrap, 1, f"{prefix}-a")
    b = await create_topic(kafka_broker.bootstrap, 1, f"{prefix}-b")
    other = await create_topic(kafka_broker.bootstrap, 1)
    for topic in (a, b, other):
        await produce(kafka_broker.bootstrap, topic, [(0, None, topic.encode())])
    async with make_poller(kafka_broker, topic_pattern=f"^{prefix}-.*") as poller:
        records = await poll_until([poller], 2)
        assert sorted(r.shard for r in records) == [f"{a}-0", f"{b}-0"]
        assert await poller.poll(10) == []


async def test_two_pollers_split_partitions_and_revoke_drains_first(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=4)
    await produce(kafka_broker.bootstrap, topic, [(i % 4, None, b"%d" % i) for i in range(8)])
    group = unique_name("g")
    first = make_poller(kafka_broker, group, topics=[topic])
    second = make_poller(kafka_broker, group, topics=[topic])
    revoked: list[frozenset[str]] = []
    hook_ran = anyio.Event()
    finished = [f"{topic}-0", f"{topic}-1"]  # "in flight" in the first poller: acked later

    async with first:
        records = await poll_until([first], 8)
        in_flight = [r for r in records if r.shard in finished]
        buffered = [r for r in records if r.shard not in finished]

        async def on_revoke(shards: frozenset[str]) -> None:
            revoked.append(shards)
            if len(revoked) == 1:
                await first.release(buffered, 0)  # what the dispatcher drops
                hook_ran.set()

        async def finish_in_flight() -> None:
            await hook_ran.wait()
            await first.ack(in_flight)

        first.on_revoke = on_revoke
        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_in_flight)
            async with second:  # returns once the group has rebalanced
                assert revoked[0] == frozenset(f"{topic}-{p}" for p in range(4))
                # A stale ack (records polled before the revoke) must be skipped.
                await first.ack(buffered)
                again = await poll_until([first, second], 4)
                assert sorted(by_shard(again).items()) == [
                    (f"{topic}-2", [0, 1]),
                    (f"{topic}-3", [0, 1]),
                ]
                assert first.statistics()["partitions"] == 2
                assert second.statistics()["partitions"] == 2
                owners = {r.shard for r in await first.poll(10)} | {
                    r.shard for r in await second.poll(10)
                }
                assert owners == set()


async def test_revoke_gives_up_after_its_timeout_and_nothing_is_committed(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=2)
    await produce(kafka_broker.bootstrap, topic, [(i % 2, None, b"%d" % i) for i in range(4)])
    group = unique_name("g")
    first = make_poller(kafka_broker, group, topics=[topic])
    first.revoke_timeout_s = 0.5
    async with first:
        stuck = await poll_until([first], 4)  # never acked nor released
        started = time.monotonic()
        async with make_poller(kafka_broker, group, topics=[topic]) as second:
            assert time.monotonic() - started < 15
            again = await poll_until([first, second], 4)
            assert by_shard(again) == {f"{topic}-0": [0, 1], f"{topic}-1": [0, 1]}
            await first.ack(stuck)  # too late: skipped, the partitions moved on
            assert await second.poll(10) == []


async def test_config_errors_and_default_group(kafka_broker: KafkaBroker) -> None:
    spec = SourceSpec(
        kind="kafka",
        name="fn/kafka[0]",
        function="orders",
        config=KafkaTrigger(connection="main", topics=["x"]),
        connection=KafkaConnection(bootstrap_servers=f" {kafka_broker.bootstrap} ,h2:9092"),
    )
    poller = create(spec)
    assert poller.group_id == "eventrun-orders"
    assert poller.bootstrap_servers == f"{kafka_broker.bootstrap},h2:9092"
    assert poller.ordered is True

    @dataclass
    class NoTopics:
        topics: list[str] | None = None
        topic_pattern: str | None = None

    with pytest.raises(ConfigError, match="topics, topic_pattern"):
        create(SourceSpec("kafka", "fn/kafka[0]", "fn", NoTopics(), spec.connection))


async def test_unreachable_broker_raises_source_unavailable_at_connect() -> None:
    from tests.fixtures._ports import free_port

    spec = SourceSpec(
        kind="kafka",
        name="fn/kafka[0]",
        function="fn",
        config=KafkaTrigger(connection="main", topics=["x"]),
        connection=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"),
    )
    with pytest.raises(SourceUnavailable, match="connect"):
        async with create(spec):
            pass


def test_connection_without_bootstrap_servers_is_a_config_error() -> None:
    spec = SourceSpec(
        kind="kafka",
        name="fn/kafka[0]",
        function="fn",
        config=KafkaTrigger(connection="main", topics=["x"]),
        connection=SimpleNamespace(bootstrap_servers=""),
    )
    with pytest.raises(ConfigError, match="fn/kafka\\[0\\]: the Kafka connection has no boot"):
        create(spec)


def test_a_duck_typed_connection_s_secret_password_is_unwrapped() -> None:
    class SaslConnection:
        bootstrap_servers = "127.0.0.1:9092"

        def aiokafka_kwargs(self, base_dir: Path | None = None) -> dict[str, object]:
            return {"sasl_plain_username": "u", "sasl_plain_password": SecretStr("s3cret")}

    kwargs = _kafka_client.client_kwargs(SaslConnection())
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["bootstrap_servers"] == "127.0.0.1:9092"


def test_error_classes_map_to_source_errors(kafka_broker: KafkaBroker) -> None:
    poller = make_poller(kafka_broker, topics=["x"])
    cases = {
        kafka_errors.SaslAuthenticationFailed(): SourceAuthError,
        kafka_errors.TopicAuthorizationFailedError(): SourceAuthError,
        kafka_errors.KafkaConnectionError(): SourceUnavailable,
        kafka_errors.RequestTimedOutError(): SourceUnavailable,
    }
    for exc, expected in cases.items():
        translated = poller._error(exc, "poll")
        assert type(translated) is expected, exc
        assert kafka_broker.bootstrap in str(translated)
    assert "check the connection's credentials" in str(
        poller._error(kafka_errors.SaslAuthenticationFailed(), "poll")
    )
    assert _kafka_client.classify(kafka_errors.MessageSizeTooLargeError()) == "rejected"


async def test_use_outside_async_with(kafka_broker: KafkaBroker) -> None:
    poller = make_poller(kafka_broker, topics=["x"])
    await poller.ack([])  # nothing to settle: fine anywhere
    with pytest.raises(SourceUnavailable, match="the Kafka consumer is not started"):
        await poller.poll(10)


async def test_a_failing_revoke_hook_is_logged_and_the_rebalance_completes(
    kafka_broker: KafkaBroker,
) -> None:
    topic = await create_topic(kafka_broker.bootstrap, partitions=2)
    await produce(kafka_broker.bootstrap, topic, [(i, None, b"%d" % i) for i in range(2)])
    group = unique_name("g")
    first = make_poller(kafka_broker, group, topics=[topic])

    async def on_revoke(shards: frozenset[str]) -> None:
        raise RuntimeError("hook broke")

    with structlog.testing.capture_logs() as logs:
        async with first:
            await first.ack(await poll_until([first], 2))
            first.on_revoke = on_revoke
            async with make_poller(kafka_broker, group, topics=[topic]) as second:
                await produce(
                    kafka_broker.bootstrap, topic, [(i, None, b"n%d" % i) for i in range(2)]
                )
                again = await poll_until([first, second], 2)
                assert sorted(r.data for r in again) == [b"n0", b"n1"]
                assert first.statistics()["partitions"] == 1
                assert second.statistics()["partitions"] == 1
    failed = [e for e in logs if e["event"] == "kafka.revoke_hook_failed"]
    assert failed
    assert "hook broke" in failed[0]["error"]
    revoked = [e for e in logs if e["event"] == "kafka.partitions_revoked"]
    assert revoked
    assert revoked[0]["drained"] is True


async def test_broker_down_then_back(kafka_broker: KafkaBroker) -> None:
    """Last in this file: it restarts the shared broker (Tansu forgets all topics)."""
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"before")])
    async with make_poller(kafka_broker, topics=[topic]) as poller:
        poller.revoke_timeout_s = 1.0
        records = await poll_until([poller], 1)
        await poller.ack(records)
        kafka_broker.stop()
        with anyio.fail_after(20):
            while True:
                try:
                    await poller.poll(10)
                except SourceUnavailable:
                    break
        kafka_broker.start()
        await create_topic(kafka_broker.bootstrap, partitions=1, name=topic)
        await produce(kafka_broker.bootstrap, topic, [(0, None, b"after")])
        got: list[Record] = []
        failures = 0
        with anyio.fail_after(60):
            while not got:
                try:
                    got = list(await poller.poll(10))
                except SourceUnavailable:
                    failures += 1
        assert [r.data for r in got] == [b"after"]
        await poller.ack(got)


async def test_commit_failed_in_an_outage_is_kept_and_retried(kafka_broker: KafkaBroker) -> None:
    """After test_broker_down_then_back: it stops the shared broker too."""
    topic = await create_topic(kafka_broker.bootstrap, partitions=1)
    await produce(kafka_broker.bootstrap, topic, [(0, None, b"r0"), (0, None, b"r1")])
    group = unique_name("g")
    with structlog.testing.capture_logs() as logs:
        async with make_poller(kafka_broker, group, topics=[topic]) as poller:
            poller.commit_timeout_s = 1.0
            records = await poll_until([poller], 2)
            kafka_broker.stop()
            try:
                with anyio.fail_after(poller.commit_timeout_s + 10):
                    await poller.ack(records[:1])  # the commit fails: kept, not raised
                with pytest.raises(SourceUnavailable, match="no Kafka broker reachable"):
                    with anyio.fail_after(poller.poll_wait_s + poller.commit_timeout_s + 10):
                        await poller.poll(10)  # retries the commit first, then finds no broker
            finally:
                kafka_broker.start()
    failed = [e for e in logs if e["event"] == "source.commit_failed"]
    assert len(failed) >= 2  # by ack, then again by the next poll
