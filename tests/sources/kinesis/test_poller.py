"""The shard poller against an in-memory shard API (``ShardApi`` implemented for real:
iterators, limits, throttling and expiry as Kinesis answers them), and the leases on an
in-memory ``KeyValueState``: what moto cannot be made to do on demand."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from eventrun.abc import JSON, Record, SourceSpec
from eventrun.config import KinesisTrigger
from eventrun.sources.kinesis import SHARD_END, StreamPoller
from eventrun.sources.kinesis._api import ShardInfo
from eventrun.sources.kinesis._events import kinesis_batch_info, kinesis_records
from eventrun.sources.kinesis._leases import Leases

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


class MemoryState:
    """``KeyValueState`` in a dict, with claims expiring on a settable clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.values: dict[str, tuple[bytes, float | None]] = {}

    async def get(self, key: str) -> bytes | None:
        found = self.values.get(key)
        if found is None or (found[1] is not None and found[1] <= self.now):
            return None
        return found[0]

    async def set(self, key: str, value: bytes) -> None:
        self.values[key] = (value, None)

    async def claim(self, key: str, ttl_s: float) -> bool:
        if await self.get(key) is not None:
            return False
        self.values[key] = (b"1", self.now + ttl_s)
        return True

    async def release(self, key: str) -> None:
        found = self.values.get(key)
        if found is not None and found[1] is not None:
            del self.values[key]


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


class MemoryShards:
    """Shards as lists of payloads; sequence numbers are ``1000 + index``."""

    kind = "kinesis"
    arn = ARN
    region = "us-east-1"

    def __init__(self, shards: dict[str, list[bytes]]) -> None:
        self.data = shards
        self.failures: list[str] = []
        """Error codes the next GetRecords calls raise, in order."""
        self.calls = 0
        self.page = 100
        """Most records one answer holds (Kinesis caps an answer at 10 MB too)."""

    async def connect(self) -> None:
        pass

    async def list_shards(self) -> list[ShardInfo]:
        return [ShardInfo(s, (), False) for s in self.data]

    async def iterator(self, shard: str, kind: str, **position: Any) -> str:
        if kind == "TRIM_HORIZON":
            return f"{shard}|0"
        if kind == "LATEST":
            return f"{shard}|{len(self.data[shard])}"
        assert kind == "AFTER_SEQUENCE_NUMBER"
        return f"{shard}|{int(position['StartingSequenceNumber']) - 1000 + 1}"

    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise _error(self.failures.pop(0))
        shard, _, pos = iterator.partition("|")
        start = int(pos)
        items = self.data[shard][start : start + min(limit, self.page)]
        end = start + len(items)
        return {
            "Records": [
                {
                    "SequenceNumber": str(1000 + start + i),
                    "ApproximateArrivalTimestamp": datetime.now(UTC),
                    "Data": data,
                    "PartitionKey": "k",
                }
                for i, data in enumerate(items)
            ],
            "NextShardIterator": f"{shard}|{end}",
            "MillisBehindLatest": 1000 if end < len(self.data[shard]) else 0,
        }

    def records(self, raw: list[dict[str, Any]], shard: str, token: object) -> list[Record]:
        return kinesis_records(raw, shard, self.arn, self.region, token)

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        return kinesis_batch_info(records, self.arn)


def _poller(api: MemoryShards, state: MemoryState, **config: Any) -> StreamPoller:
    trigger = KinesisTrigger(stream="s", poll_interval=0.05, **config)
    spec = SourceSpec(kind="kinesis", name="f/kinesis[0]", function="f", config=trigger)

    async def open_api(stack: contextlib.AsyncExitStack) -> MemoryShards:
        return api

    poller = StreamPoller(spec, open_api)
    poller.state = state
    return poller


async def _drain(poller: StreamPoller, count: int, limit: int = 100) -> list[Record]:
    got: list[Record] = []
    with anyio.fail_after(20):
        while len(got) < count:
            got += await poller.poll(limit)
    return got


async def test_throttled_and_expired_reads_keep_the_position() -> None:
    api = MemoryShards({"shardId-0": [b"%d" % i for i in range(250)]})
    state = MemoryState()
    api.failures = ["ProvisionedThroughputExceededException", "ExpiredIteratorException"]
    with capture_logs() as logs:
        async with _poller(api, state) as poller:
            first = await _drain(poller, 100)
            api.failures = ["LimitExceededException", "ExpiredIteratorException"]
            rest = await _drain(poller, 150)
            await poller.ack(first + rest)
    data = [r.data for r in first + rest]
    assert data == [b"%d" % i for i in range(250)], "nothing lost or repeated, in order"
    events = [e["event"] for e in logs]
    assert events.count("stream.throttled") == 2
    assert events.count("stream.iterator_renewed") == 2
    throttled = [e for e in logs if e["event"] == "stream.throttled"]
    assert all(e["retry_in_s"] >= 0.4 for e in throttled), "backed off, not hammered"
    assert await state.get("ckpt:shardId-0") == b"1249"


async def test_checkpoint_is_where_a_new_poller_starts() -> None:
    api = MemoryShards({"shardId-0": [b"%d" % i for i in range(30)]})
    state = MemoryState()
    async with _poller(api, state) as poller:
        got = await _drain(poller, 30)
        await poller.ack(got[:12])  # handled: the first 12
    assert await state.get("ckpt:shardId-0") == b"1011"
    state.now += 100  # the old leases ran out
    async with _poller(api, state) as poller:
        again = await _drain(poller, 18)
    assert [r.data for r in again] == [b"%d" % i for i in range(12, 30)]
    stats = poller.statistics()
    assert stats["millis_behind_latest"] == 0


async def test_leases_split_between_members_and_pass_on_when_one_stops() -> None:
    state = MemoryState()  # one clock for the store's expiry and the members
    a = Leases(state, 10.0, now=lambda: state.now)
    b = Leases(state, 10.0, now=lambda: state.now)
    shards = ["s0", "s1", "s2", "s3"]
    for member in (a, b, a):
        await member.refresh_members()
    assert (a.members, b.members) == (2, 2)
    assert a.preferred(shards) == ["s0", "s2"]
    assert b.preferred(shards) == ["s1", "s3"]
    assert all([await a.acquire(s) for s in a.preferred(shards)])
    assert all([await b.acquire(s) for s in b.preferred(shards)])
    assert not await b.acquire("s0"), "held by a"
    # both renew every quarter epoch for a while: nothing changes hands
    for _ in range(8):
        state.now += 2.5
        for member in (a, b):
            await member.refresh_members()
            assert all([await member.acquire(s) for s in member.preferred(shards)])
    # a stops (dies); b renews every quarter epoch and takes a's shards within two epochs
    taken_at = None
    for step in range(12):
        state.now += 2.5
        await b.refresh_members()
        held = [s for s in b.preferred(shards) if await b.acquire(s)]
        if held == shards and taken_at is None:
            taken_at = step
    assert b.members == 1
    assert taken_at is not None
    assert taken_at * 2.5 <= 2 * 10.0 + 2.5
    # 20 epochs of claims, a bounded set of keys (a SQLite store keeps expired ones)
    assert len([k for k in state.values if k.startswith("lease:")]) <= 4 * 4
    assert len([k for k in state.values if k.startswith("member:")]) <= 2 * 4


async def test_a_clean_stop_releases_leases_and_membership_at_once() -> None:
    """A member that stops cleanly gives back its shards and its slot: the other takes
    every shard at its next renewal, in the same epoch (not two epochs later)."""
    state = MemoryState()
    a = Leases(state, 10.0, now=lambda: state.now)
    b = Leases(state, 10.0, now=lambda: state.now)
    shards = ["s0", "s1"]
    for member in (a, b, a):
        await member.refresh_members()
    assert all([await a.acquire(s) for s in a.preferred(shards)])
    assert all([await b.acquire(s) for s in b.preferred(shards)])
    epoch = a.epoch()
    await a.release_all()
    assert a.held() == []
    state.now += 0.1
    await b.refresh_members()
    assert b.members == 1
    assert [s for s in b.preferred(shards) if await b.acquire(s)] == shards
    assert b.epoch() == epoch


async def test_a_poller_stopped_cleanly_lets_the_next_one_start_at_once() -> None:
    api = MemoryShards({"shardId-0": [b"%d" % i for i in range(10)]})
    state = MemoryState()
    async with _poller(api, state) as poller:
        got = await _drain(poller, 10)
        await poller.ack(got[:4])
    # same clock: the first poller's claims have not run out
    async with _poller(api, state) as poller:
        again = await _drain(poller, 6)
    assert [r.data for r in again] == [b"%d" % i for i in range(4, 10)]


def test_shard_end_marker_is_not_a_sequence_number() -> None:
    assert not SHARD_END.isdigit()


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "AccessDeniedException"])
async def test_fatal_read_errors_surface_as_source_errors(code: str) -> None:
    from eventrun.exceptions import SourceError

    api = MemoryShards({"shardId-0": [b"x"]})
    async with _poller(api, MemoryState()) as poller:
        api.failures = [code]
        with pytest.raises(SourceError, match=code):
            await _poll_until_error(poller)


async def _poll_until_error(poller: StreamPoller) -> None:
    with anyio.fail_after(5):
        while True:
            await poller.poll(10)


class TimedShards(MemoryShards):
    """Records arriving at set times (``arrivals[payload]``, epoch seconds)."""

    def __init__(self, shards: dict[str, list[bytes]], arrivals: dict[bytes, float]) -> None:
        super().__init__(shards)
        self.arrivals = arrivals

    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        answer = await super().get_records(iterator, limit)
        for raw in answer["Records"]:
            raw["ApproximateArrivalTimestamp"] = datetime.fromtimestamp(
                self.arrivals[raw["Data"]], UTC
            )
        return answer


async def test_the_next_window_opened_between_a_final_result_and_its_ack_stays_open() -> None:
    """Regression: the dispatcher reports a final invocation's result (``on_result``, which
    closes the window) and then acknowledges it (``ack``); a poll in between opens the next
    window, and the ack used to close that one too: its state and its final invocation were
    lost (records never reached a final window after a restart in the e2e test)."""
    api = TimedShards({"shardId-0": [b"a", b"b"]}, {b"a": 100.5, b"b": 111.0})
    state = MemoryState()
    async with _poller(api, state, tumbling_window=10) as poller:
        [a] = await _drain(poller, 1)
        await poller.on_result([a], b'{"state": {"ids": ["a"]}}')
        await poller.ack([a])
        [final_a] = await _drain(poller, 1)
        assert poller.batch_event([final_a])["isFinalInvokeForWindow"] is True
        await poller.on_result([final_a], b'{"state": {}}')
        [b] = await _drain(poller, 1)  # the next window opens before the ack below
        assert poller.batch_event([b])["window"]["start"] == "1970-01-01T00:01:50Z"
        await poller.ack([final_a])
        await poller.on_result([b], b'{"state": {"ids": ["b"]}}')
        await poller.ack([b])
        [final_b] = await _drain(poller, 1)
        event = poller.batch_event([final_b])
    assert event["isFinalInvokeForWindow"] is True
    assert event["window"]["start"] == "1970-01-01T00:01:50Z"
    assert event["state"] == {"ids": ["b"]}


async def test_a_state_over_1_mb_ends_the_window_early() -> None:
    api = TimedShards({"shardId-0": [b"a", b"b"]}, {b"a": 100.5, b"b": 101.0})
    async with _poller(api, MemoryState(), tumbling_window=10) as poller:
        [a] = await _drain(poller, 1, limit=1)
        big = json.dumps({"state": {"blob": "x" * (1024 * 1024)}}).encode()
        await poller.on_result([a], big)
        await poller.ack([a])
        [final] = await _drain(poller, 1)
        event = poller.batch_event([final])
        assert (event["isFinalInvokeForWindow"], event["isWindowTerminatedEarly"]) == (True, True)
        await poller.on_result([final], b'{"state": {}}')
        await poller.ack([final])
        [b] = await _drain(poller, 1)
        event = poller.batch_event([b])
    assert event["state"] == {}, "the same window goes on with a fresh state"
    assert event["window"]["start"] == "1970-01-01T00:01:40Z"
    assert event["isWindowTerminatedEarly"] is False
