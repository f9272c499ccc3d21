"""The dispatcher's event-source-mapping contract, driven through the real dispatcher."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import structlog.testing

from eventrun.abc import OutMessage, Record
from eventrun.dispatch._filters import RecordFilter
from eventrun.exceptions import SourceUnavailable
from eventrun.testing import FakeClock, MemoryQueue, MemorySink, MemoryStream
from tests._dispatch_kit import FAST, Handler, data_of, running, until


def _seqs(handler: Handler) -> list[tuple[str, int]]:
    """(key, seq) of every record handled, in handling order (payloads are 'key:seq')."""
    out = []
    for call in handler.calls:
        for r in call:
            key, seq = data_of(r).split(":")
            out.append((key, int(seq)))
    return out


def _order_violations(pairs: list[tuple[str, int]]) -> int:
    last: dict[str, int] = {}
    bad = 0
    for key, seq in pairs:
        if seq < last.get(key, -1):
            bad += 1
        last[key] = max(seq, last.get(key, -1))
    return bad


async def test_stream_order_per_shard_and_everything_committed() -> None:
    stream = MemoryStream()
    for i in range(2000):
        stream.put(f"s{i % 4}", f"s{i % 4}:{i}".encode())
    handler = Handler()
    async with running(stream, handler, batch_size=50):
        await until(stream, lambda: stream.lag() == 0)
    pairs = _seqs(handler)
    assert len(pairs) == 2000
    assert _order_violations(pairs) == 0
    assert all(len(call) <= 50 for call in handler.calls)
    assert stream.committed == {f"s{i}": 500 for i in range(4)}


@pytest.mark.parametrize("factor", [1, 4, 10])
async def test_parallel_lanes_keep_order_per_key(factor: int) -> None:
    stream = MemoryStream()
    rng = random.Random(factor)
    seq: dict[str, int] = {}
    for _ in range(3000):
        key = f"k{rng.randrange(100)}"
        seq[key] = seq.get(key, -1) + 1
        stream.put(f"p{int(key[1:]) % 4}", f"{key}:{seq[key]}".encode(), key=key)
    handler = Handler(delay_s=0.001)
    async with running(stream, handler, batch_size=20, parallelization_factor=factor):
        await until(stream, lambda: stream.lag() == 0)
    pairs = _seqs(handler)
    assert sorted(pairs) == sorted((k, s) for k, n in seq.items() for s in range(n + 1))
    assert _order_violations(pairs) == 0
    if factor > 1:
        assert handler.max_in_flight > 1


async def test_parallel_lanes_are_not_tied_to_key_hashes() -> None:
    """a, b and c all have crc32 % 2 == 1: a static hash split would run them in one lane
    one after another; any free lane takes any waiting key."""
    stream = MemoryStream()
    for i, key in enumerate(["a", "b", "c", "a", "b", "c"]):
        stream.put("s", f"{key}:{i}".encode(), key=key)
    handler = Handler(delay_s=0.02)
    async with running(stream, handler, batch_size=1, parallelization_factor=2):
        await until(stream, lambda: stream.lag() == 0)
    assert handler.max_in_flight == 2
    assert _order_violations(_seqs(handler)) == 0
    assert stream.committed == {"s": 6}


async def test_batch_flushes_at_size() -> None:
    stream = MemoryStream()
    for i in range(250):
        stream.put("s", f"s:{i}".encode())
    handler = Handler()
    async with running(stream, handler, batch_size=100):
        await until(stream, lambda: stream.lag() == 0)
    assert [len(c) for c in handler.calls] == [100, 100, 50]


async def test_batch_flushes_at_payload_limit() -> None:
    stream = MemoryStream()
    for i in range(10):
        stream.put("s", f"s:{i}".encode() + b" " * 10_000)
    handler = Handler()
    # each record counts ~10 KB; a 25 KB limit allows 2 records per batch
    async with running(stream, handler, batch_size=100, max_payload_bytes=25_000):
        await until(stream, lambda: stream.lag() == 0)
    assert [len(c) for c in handler.calls] == [2] * 5


async def test_batching_window_waits_on_the_clock() -> None:
    clock = FakeClock()
    stream = MemoryStream()
    handler = Handler()
    async with running(stream, handler, clock=clock, batch_size=10, window_s=5.0):
        stream.put("s", b"s:0")
        await clock.wait_for_sleepers(1)
        stream.put("s", b"s:1")
        await clock.advance(4.9)
        assert handler.calls == []
        await clock.advance(0.2)
        await until(stream, lambda: stream.lag() == 0)
    assert [len(c) for c in handler.calls] == [2]


async def test_batching_window_on_the_system_clock_ends_by_itself() -> None:
    stream = MemoryStream()
    handler = Handler()
    async with running(stream, handler, batch_size=10, window_s=0.2):
        started = time.monotonic()
        stream.put("s", b"s:0")
        stream.put("s", b"s:1")
        with anyio.fail_after(5):
            await handler.wait_calls(1)
        waited = time.monotonic() - started
        await until(stream, lambda: stream.lag() == 0)
    assert [len(c) for c in handler.calls] == [2]  # one part batch, after the window
    assert waited >= 0.19


async def test_failing_batch_retries_with_backoff_then_goes_to_on_failure() -> None:
    stream = MemoryStream()
    stream.put("s", b"s:0")
    stream.put("s", b"s:1")
    dlq = MemorySink()

    def fail(records: list[dict[str, Any]]) -> None:
        raise ValueError("boom")

    handler = Handler(fn=fail)
    async with running(stream, handler, max_retry_attempts=2, on_failure=dlq):
        await until(stream, lambda: stream.lag() == 0)
    assert len(handler.calls) == 3  # first attempt + 2 retries
    assert len(dlq.messages) == 1
    record = json.loads(dlq.messages[0].payload)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:fn")
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["version"] == "1.0"
    assert record["MemoryBatchInfo"]["batchSize"] == 2
    assert [data_of(r) for r in record["payload"]["Records"]] == ["s:0", "s:1"]
    assert stream.committed == {"s": 2}


async def test_backoff_schedule_is_exponential() -> None:
    from eventrun.dispatch._backoff import Backoff

    b = Backoff(base_s=1.0, cap_s=8.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    jittered = Backoff(base_s=1.0, cap_s=8.0, jitter=0.5)
    assert all(1.0 <= jittered.delay(2) <= 2.0 for _ in range(100))


async def test_bisect_isolates_one_poison_record_among_1000() -> None:
    stream = MemoryStream()
    for i in range(1000):
        stream.put("s", f"s:{i}".encode())
    dlq = MemorySink()
    seen_ok: list[int] = []

    def handle(records: list[dict[str, Any]]) -> None:
        values = [int(data_of(r).split(":")[1]) for r in records]
        if 613 in values:
            raise RuntimeError("poison")
        seen_ok.extend(values)

    handler = Handler(fn=handle)
    async with running(
        stream, handler, batch_size=1000, bisect=True, max_retry_attempts=1, on_failure=dlq
    ):
        await until(stream, lambda: stream.lag() == 0)
    assert sorted(seen_ok) == [i for i in range(1000) if i != 613]
    assert len(seen_ok) == 999  # every other record succeeded exactly once
    assert seen_ok == sorted(seen_ok)
    (message,) = dlq.messages
    record = json.loads(message.payload)
    assert [data_of(r) for r in record["payload"]["Records"]] == ["s:613"]
    assert stream.committed == {"s": 1000}


async def test_max_record_age_expires_records_to_on_failure() -> None:
    clock = FakeClock()
    stream = MemoryStream(clock=clock.time)
    stream.put("s", b"s:0")
    dlq = MemorySink()

    def fail(records: list[dict[str, Any]]) -> None:
        raise ValueError("boom")

    handler = Handler(fn=fail)
    from eventrun.dispatch._backoff import Backoff

    async with running(
        stream,
        handler,
        clock=clock,
        max_record_age_s=60.0,
        backoff=Backoff(base_s=10.0, cap_s=10.0, jitter=0.0),
        on_failure=dlq,
    ):
        while not dlq.messages:
            await clock.wait_for_sleepers(1)
            await clock.advance(10.0)
        await until(stream, lambda: stream.lag() == 0)
    record = json.loads(dlq.messages[0].payload)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    # attempts at t=0,10,...,60 fail; at t=70 the record is older than 60 s
    assert len(handler.calls) == 7


async def test_stream_partial_failure_resumes_from_lowest_failed() -> None:
    stream = MemoryStream()
    for i in range(6):
        stream.put("s", f"s:{i}".encode())
    attempts: list[list[str]] = []

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        attempts.append([data_of(r) for r in records])
        if len(attempts) == 1:
            failed = [r["sequenceNumber"] for r in records if data_of(r) in ("s:2", "s:4")]
            return {"batchItemFailures": [{"itemIdentifier": f} for f in failed]}
        return {"batchItemFailures": []}

    handler = Handler(fn=handle)
    async with running(stream, handler, batch_size=10, report_batch_item_failures=True):
        await until(stream, lambda: stream.lag() == 0)
    # resume from s:2: the later success s:3 is delivered again
    assert attempts == [[f"s:{i}" for i in range(6)], ["s:2", "s:3", "s:4", "s:5"]]


async def test_invalid_item_identifier_fails_the_whole_batch() -> None:
    stream = MemoryStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode())
    attempts: list[int] = []

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        attempts.append(len(records))
        if len(attempts) == 1:
            return {"batchItemFailures": [{"itemIdentifier": ""}]}
        return {}

    handler = Handler(fn=handle)
    async with running(stream, handler, report_batch_item_failures=True):
        await until(stream, lambda: stream.lag() == 0)
    assert attempts == [3, 3]


@pytest.mark.parametrize(
    "response",
    [{"batchItemFailures": "s:0"}, {"batchItemFailures": ["s:0"]}],
    ids=["not-a-list", "entry-not-an-object"],
)
async def test_a_malformed_batch_item_failures_fails_the_whole_batch(
    response: dict[str, Any],
) -> None:
    stream = MemoryStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode())
    attempts: list[int] = []

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        attempts.append(len(records))
        return response if len(attempts) == 1 else {}

    async with running(stream, Handler(fn=handle), report_batch_item_failures=True):
        await until(stream, lambda: stream.lag() == 0)
    assert attempts == [3, 3]  # retried whole, not taken as "nothing failed"


def _b_blocked(stream: MemoryStream) -> tuple[Handler, anyio.Event]:
    """Keys a, b, c in one shard; b's record fails until the returned event is set."""
    for i, key in enumerate(["a", "b", "c", "a", "c"]):
        stream.put("s", f"{key}:{i}".encode(), key=key)
    gate = anyio.Event()

    def handle(records: list[dict[str, Any]]) -> None:
        if any(data_of(r).startswith("b:") for r in records) and not gate.is_set():
            raise ValueError("b is not ready")

    return Handler(fn=handle), gate


async def test_gap_aware_ack_never_passes_a_failed_middle_record() -> None:
    stream = MemoryStream()
    handler, gate = _b_blocked(stream)
    async with running(stream, handler, batch_size=1, parallelization_factor=10):
        # a:0 completes; b:1 fails; c:2, a:3, c:4 complete: only offset 0 may be committed
        await handler.wait_calls(8)
        assert stream.committed == {"s": 1}
        assert all(off == 0 for _, off in stream.acked)
        gate.set()
        await until(stream, lambda: stream.lag() == 0)
    assert stream.committed == {"s": 5}
    assert [off for _, off in stream.acked] == [0, 1, 2, 3, 4]


class _EachAckStream(MemoryStream):
    """A stream whose broker acknowledges records one by one (like Redis XACK)."""

    acks_each_record = True


async def test_acks_each_record_acknowledges_past_a_failing_key() -> None:
    stream = _EachAckStream()
    handler, gate = _b_blocked(stream)
    async with running(stream, handler, batch_size=1, parallelization_factor=10):
        await handler.wait_calls(8)
        # everything but b's record is acknowledged while b keeps failing
        await until(stream, lambda: len(stream.acked) == 4)
        assert sorted(off for _, off in stream.acked) == [0, 2, 3, 4]
        gate.set()
        await until(stream, lambda: len(stream.acked) == 5)
    assert sorted(off for _, off in stream.acked) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("pattern", "body", "passes"),
    [
        ({"body": {"kind": ["order"]}}, b'{"kind": "order"}', True),
        ({"body": {"kind": ["order"]}}, b'{"kind": "refund"}', False),
        ({"body": {"kind": ["order"]}}, b"plain text", False),
        ({"body": ["plain text"]}, b"plain text", True),
        ({"body": {"n": [{"numeric": [">", 10, "<=", 20]}]}}, b'{"n": 15}', True),
        ({"body": {"n": [{"numeric": [">", 10, "<=", 20]}]}}, b'{"n": 25}', False),
        ({"body": {"r": [{"prefix": "us-"}]}}, b'{"r": "us-east-1"}', True),
        ({"body": {"r": [{"suffix": ".png"}]}}, b'{"r": "a.png"}', True),
        ({"body": {"w": [{"anything-but": ["rain"]}]}}, b'{"w": "rain"}', False),
        ({"body": {"w": [{"anything-but": ["rain"]}]}}, b'{"w": "sun"}', True),
        ({"body": {"x": [{"exists": True}]}}, b'{"x": 1}', True),
        ({"body": {"x": [{"exists": False}]}}, b'{"x": 1}', False),
        ({"body": {"x": [{"exists": False}]}}, b'{"y": 1}', True),
        ({"body": {"n": [{"equals-ignore-case": "BoB"}]}}, b'{"n": "bob"}', True),
        ({"body": {"p": [300]}}, b'{"p": 300}', True),
        ({"body": {"p": [300]}}, b'{"p": 300.0}', False),
        ({"body": {"tags": ["b"]}}, b'{"tags": ["a", "b"]}', True),
        ({"body": {"v": [None]}}, b'{"v": null}', True),
        ({"attributes": {"MessageGroupId": ["g1"]}}, b"{}", True),
    ],
)
async def test_filters(pattern: dict[str, Any], body: bytes, passes: bool) -> None:
    queue = MemoryQueue(fifo=True)
    queue.send(body, group="g1")
    handler = Handler()
    flt = RecordFilter([pattern])
    async with running(queue, handler, filter=flt):
        await until(queue, lambda: queue.depth() == 0)
    assert (len(handler.calls) == 1) is passes
    assert queue.deleted == ["m-000001"]  # filtered-out messages are deleted too


async def test_filters_are_ored() -> None:
    flt = RecordFilter([{"body": {"a": [1]}}, {"body": {"b": [2]}}])
    assert flt.matches({"body": {"b": 2}})
    assert not flt.matches({"body": {"c": 3}})


async def test_queue_partial_failure_releases_only_listed() -> None:
    queue = MemoryQueue()
    ids = [queue.send(f"q:{i}".encode()) for i in range(5)]
    calls: list[list[str]] = []

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        calls.append([r["messageId"] for r in records])
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": ids[1]}, {"itemIdentifier": ids[3]}]}
        return {"batchItemFailures": []}

    handler = Handler(fn=handle)
    async with running(queue, handler, batch_size=10, report_batch_item_failures=True):
        await until(queue, lambda: queue.depth() == 0)
    assert calls[0] == ids
    assert sorted(m for c in calls[1:] for m in c) == [ids[1], ids[3]]
    assert sorted(queue.deleted[:3]) == sorted([ids[0], ids[2], ids[4]])


async def test_fifo_failure_releases_the_rest_of_its_group_and_keeps_order() -> None:
    queue = MemoryQueue(fifo=True)
    for i in range(4):
        queue.send(f"g:{i}".encode(), group="g")
    order: list[str] = []
    failed_once = False

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal failed_once
        bodies = [r["body"] for r in records]
        if "g:1" in bodies and not failed_once:
            failed_once = True
            mid = records[bodies.index("g:1")]["messageId"]
            order.extend(bodies[: bodies.index("g:1")])
            return {"batchItemFailures": [{"itemIdentifier": mid}]}
        order.extend(bodies)
        return {}

    handler = Handler(fn=handle)
    async with running(queue, handler, batch_size=10, report_batch_item_failures=True):
        await until(queue, lambda: queue.depth() == 0)
    assert order == ["g:0", "g:1", "g:2", "g:3"]


async def test_queue_max_receive_count_sends_to_on_failure() -> None:
    queue = MemoryQueue()
    queue.send(b"poison")
    dlq = MemorySink()

    def fail(records: list[dict[str, Any]]) -> None:
        raise ValueError("no")

    handler = Handler(fn=fail)
    async with running(queue, handler, max_receive_count=3, on_failure=dlq):
        await until(queue, lambda: queue.depth() == 0)
    assert len(handler.calls) == 3
    record = json.loads(dlq.messages[0].payload)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["payload"]["Records"][0]["body"] == "poison"


async def test_on_failure_waits_for_a_sink_that_is_down() -> None:
    stream = MemoryStream()
    stream.put("s", b"s:0")
    dlq = MemorySink()
    dlq.down = True

    def fail(records: list[dict[str, Any]]) -> None:
        raise ValueError("no")

    handler = Handler(fn=fail)
    async with running(stream, handler, max_retry_attempts=0, on_failure=dlq):
        while dlq.failed_sends < 3:  # noqa: ASYNC110 - counts attempts, no event for a failure
            await anyio.sleep(0.01)
        assert stream.committed == {}  # not acknowledged while the DLQ is down
        dlq.down = False
        await until(stream, lambda: stream.lag() == 0)
    assert len(dlq.messages) == 1


async def test_shutdown_finishes_in_flight_and_acks_nothing_unfinished() -> None:
    stream = MemoryStream()
    for i in range(30):
        stream.put("s", f"s:{i}".encode())
    started = anyio.Event()
    release = anyio.Event()

    async def slow_invoke(payload: bytes) -> Any:
        started.set()
        await release.wait()
        return await plain(payload)

    plain = Handler()
    from tests._dispatch_kit import running as run_ctx

    async with anyio.create_task_group() as tg:

        async def stop_soon() -> None:
            await started.wait()
            release.set()

        tg.start_soon(stop_soon)
        async with run_ctx(stream, slow_invoke, batch_size=10):  # type: ignore[arg-type]
            await started.wait()
    # exactly the in-flight batch finished and was committed; the rest stays for later
    assert len(plain.calls) == 1
    assert stream.committed == {"s": 10}


async def test_shutdown_grace_exceeded_acknowledges_nothing() -> None:
    stream = MemoryStream()
    for i in range(5):
        stream.put("s", f"s:{i}".encode())
    started = anyio.Event()

    async def stuck(payload: bytes) -> Any:
        started.set()
        await anyio.sleep_forever()

    async with running(stream, stuck, grace_s=0.05):  # type: ignore[arg-type]
        await started.wait()
    assert stream.committed == {}


async def test_backpressure_bounds_intake() -> None:
    stream = MemoryStream()
    for i in range(5000):
        stream.put("s", f"s:{i}".encode())
    gate = anyio.Event()
    started = anyio.Event()

    async def blocked(payload: bytes) -> Any:
        started.set()
        await gate.wait()
        return await Handler()(payload)

    limit = 50  # buffer_records; above a batch per lane (10 x (1 lane + 1))
    async with running(stream, blocked, batch_size=10, buffer_records=limit) as d:  # type: ignore[arg-type]
        await started.wait()
        # every task parked: the poll loop waits for room, it is not about to read more
        await anyio.wait_all_tasks_blocked()
        assert d.statistics()["polled"] == limit
        gate.set()
        await until(stream, lambda: stream.lag() == 0)


async def test_source_outage_is_retried_without_losing_records() -> None:
    stream = MemoryStream()
    stream.available = False
    stream.put("s", b"s:0")
    handler = Handler()
    async with running(stream, handler) as d:
        while d.statistics()["poll_errors"] < 2:  # noqa: ASYNC110 - no event for a failed poll
            await anyio.sleep(0.01)
        stream.available = True
        await until(stream, lambda: stream.lag() == 0)
    assert [data_of(r) for c in handler.calls for r in c] == ["s:0"]


async def test_pipeline_outputs_published_before_ack() -> None:
    events: list[tuple[str, str]] = []  # ("send", payload n) and ("ack", offset), in order

    class NotingStream(MemoryStream):
        async def ack(self, records: Sequence[Record]) -> None:
            events.extend(("ack", f"s:{r.token}") for r in records)
            await super().ack(records)

    class NotingSink(MemorySink):
        async def send(self, messages: Sequence[OutMessage]) -> None:
            await super().send(messages)
            events.extend(("send", json.loads(m.payload)["n"]) for m in messages)

    stream = NotingStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode(), key=f"k{i}")
    out = NotingSink()
    handler = Handler(fn=lambda records: {"records": [{"n": data_of(r)} for r in records]})
    async with running(stream, handler, batch_size=3, window_s=0.0, on_success=out):
        await until(stream, lambda: stream.lag() == 0)
    assert sorted(json.loads(m.payload)["n"] for m in out.messages) == ["s:0", "s:1", "s:2"]
    assert {m.key for m in out.messages} <= {"k0", "k1", "k2"}
    # each input is acknowledged only after its output was sent
    acked = [n for kind, n in events if kind == "ack"]
    assert sorted(acked) == ["s:0", "s:1", "s:2"]
    for n in acked:
        assert events.index(("send", n)) < events.index(("ack", n)), events


class RevokableStream(MemoryStream):
    """A stream whose poller exposes the Kafka-style ``on_revoke`` hook."""

    on_revoke: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.released_offsets: list[tuple[str, int]] = []

    async def release(self, records: Any, delay_s: float) -> None:
        self.released_offsets.extend((r.shard, int(r.token)) for r in records)
        await super().release(records, delay_s)


async def test_revoked_shard_releases_buffered_records_and_finishes_in_flight() -> None:
    stream = RevokableStream()
    for i in range(30):
        stream.put("a", f"a:{i}".encode())
    gate = anyio.Event()
    started = anyio.Event()
    handler = Handler()

    async def blocked(payload: bytes) -> Any:
        started.set()
        await gate.wait()
        return await handler(payload)

    async with running(stream, blocked, batch_size=10):  # type: ignore[arg-type]
        await started.wait()
        assert stream.on_revoke is not None
        await stream.on_revoke(frozenset({"a"}))
        gate.set()
        await until(stream, lambda: stream.committed.get("a") == 10)
    # the running batch (0..9) finished and was committed; the buffered 10..29 went back
    assert [data_of(r) for c in handler.calls for r in c] == [f"a:{i}" for i in range(10)]
    assert sorted(off for _, off in stream.released_offsets) == list(range(10, 30))


class AskingStream(MemoryStream):
    """A stream that hands out at most ``per_poll`` records a poll and notes each ask."""

    def __init__(self, per_poll: int) -> None:
        super().__init__()
        self.per_poll = per_poll
        self.asks: list[int] = []

    async def poll(self, max_records: int) -> Sequence[Record]:
        self.asks.append(max_records)
        return await super().poll(min(max_records, self.per_poll))


async def test_a_full_buffer_is_polled_again_once_a_batch_fits() -> None:
    """With the buffer near its limit, a poll waits until a batch's worth of room is
    free instead of asking for the few records that just completed (under load, a poll
    per handful of records cost a poll, a fetch per partition, for each)."""
    stream = AskingStream(per_poll=7)
    for i in range(600):
        stream.put("s", f"s:{i}".encode())

    async def slow(payload: bytes) -> Any:
        await anyio.sleep(0.002)  # the work: records pile up in the buffer meanwhile
        return await Handler()(payload)

    async with running(stream, slow, batch_size=10, window_s=0.0, buffer_records=30):  # type: ignore[arg-type]
        await until(stream, lambda: stream.lag() == 0)
    # the limit is 30 here (room for the one lane's batch and another): a batch is 10
    assert len(stream.asks) >= 600 // 30
    assert min(stream.asks) >= 10, sorted(stream.asks)[:10]
    assert max(stream.asks) <= 30


async def test_one_batch_done_line_per_batch_with_its_fields() -> None:
    """README: one log line per batch with request id, function, trigger, shard, size,
    attempt, outcome and duration; ``attempt`` counts up across retries."""
    stream = MemoryStream()
    for i in range(4):
        stream.put("s", f"s:{i}".encode())

    def handle(records: list[dict[str, Any]]) -> dict[str, Any]:
        if len(handler.calls) == 1:
            raise ValueError("first attempt fails")
        if len(handler.calls) == 2:  # s:2 fails: s:0 and s:1 are done, s:2 s:3 retried
            failed = [r["sequenceNumber"] for r in records if data_of(r) == "s:2"]
            return {"batchItemFailures": [{"itemIdentifier": f} for f in failed]}
        return {"batchItemFailures": []}

    handler = Handler(fn=handle)
    with structlog.testing.capture_logs() as logs:
        async with running(
            stream, handler, batch_size=10, window_s=0.0, report_batch_item_failures=True
        ):
            await until(stream, lambda: stream.lag() == 0)
    lines = [e for e in logs if e["event"] == "batch.done"]
    durations = [e.pop("duration_s") for e in lines]
    assert all(isinstance(d, float) and d >= 0 for d in durations)
    common = {"event": "batch.done", "log_level": "info", "function": "fn"}
    common |= {"trigger": "fn/test[0]", "shard": "s"}
    assert lines == [
        {**common, "request_id": "req-1", "size": 4, "attempt": 1, "outcome": "error"}
        | {"failed": 4},
        {**common, "request_id": "req-2", "size": 4, "attempt": 2, "outcome": "partial"}
        | {"failed": 1},
        {**common, "request_id": "req-3", "size": 2, "attempt": 3, "outcome": "ok"} | {"failed": 0},
    ]
    retries = [(e["size"], e["attempt"]) for e in logs if e["event"] == "batch.retry"]
    assert retries == [(4, 1), (2, 2)]


async def test_input_stays_unacknowledged_while_the_on_success_sink_is_down() -> None:
    """Pipeline outputs are published before the input is acknowledged: with the
    ``on_success`` sink down nothing is committed; once it is back the outputs arrive
    once each and the input is committed."""
    stream = MemoryStream()
    for i in range(3):
        stream.put("s", f"s:{i}".encode(), key=f"k{i}")
    out = MemorySink()
    out.down = True
    handler = Handler(fn=lambda records: {"records": [{"n": data_of(r)} for r in records]})
    async with running(stream, handler, batch_size=3, window_s=0.0, on_success=out):
        while out.failed_sends < 3:  # noqa: ASYNC110 - counts attempts, no event for a failure
            await anyio.sleep(0.01)
        assert len(handler.calls) == 1  # handled once; only the publish is retried
        assert stream.committed == {}
        out.down = False
        await until(stream, lambda: stream.lag() == 0)
    assert stream.committed == {"s": 3}
    assert len(handler.calls) == 1
    assert [(json.loads(m.payload)["n"], m.key) for m in out.messages] == [
        ("s:0", "k0"),
        ("s:1", "k1"),
        ("s:2", "k2"),
    ]


async def test_a_record_larger_than_the_payload_limit_goes_to_on_failure_uninvoked() -> None:
    stream = MemoryStream()
    stream.put("s", b"s:0" + b" " * 30_000)
    stream.put("s", b"s:1")
    dlq = MemorySink()
    handler = Handler()
    async with running(stream, handler, max_payload_bytes=25_000, on_failure=dlq):
        await until(stream, lambda: stream.lag() == 0)
    assert [[data_of(r) for r in call] for call in handler.calls] == [["s:1"]]
    assert len(dlq.messages) == 1
    record = json.loads(dlq.messages[0].payload)
    assert record["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] is None  # never invoked: no response
    assert [data_of(r).strip() for r in record["payload"]["Records"]] == ["s:0"]
    assert stream.committed == {"s": 2}


class FlakyAckStream(MemoryStream):
    """Refuses the first ``refusals`` acknowledgements (a broker hiccup on commit)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def ack(self, records: Sequence[Record]) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise SourceUnavailable("commit refused")
        await super().ack(records)


async def test_a_refused_ack_is_retried_then_abandoned_after_five_attempts() -> None:
    stream = FlakyAckStream(refusals=2)
    stream.put("s", b"s:0")
    handler = Handler()
    with structlog.testing.capture_logs() as logs:
        async with running(stream, handler, poll_backoff=FAST):
            await until(stream, lambda: stream.lag() == 0)
    failed = [e for e in logs if e["event"] == "source.ack_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert all(e["error"] == "commit refused" for e in failed)
    assert stream.committed == {"s": 1}
    assert len(handler.calls) == 1  # acknowledging again never re-invokes

    stuck = FlakyAckStream(refusals=100)
    stuck.put("s", b"s:0")
    with structlog.testing.capture_logs() as logs:
        async with running(stuck, Handler(), poll_backoff=FAST):
            with anyio.fail_after(10):
                while not [e for e in logs if e["event"] == "source.ack_abandoned"]:  # noqa: ASYNC110 - a log line is the only signal
                    await anyio.sleep(0.005)
    assert [e["attempt"] for e in logs if e["event"] == "source.ack_failed"][:5] == [1, 2, 3, 4, 5]
    (abandoned,) = [e for e in logs if e["event"] == "source.ack_abandoned"][:1]
    assert abandoned["size"] == 1
    assert abandoned["log_level"] == "error"
    assert stuck.committed == {}


async def test_a_refused_visibility_extension_is_logged_and_the_batch_still_finishes() -> None:
    class RefusingQueue(MemoryQueue):
        heartbeat_interval_s = 0.01

        def __init__(self) -> None:
            super().__init__()
            self.refused = anyio.Event()

        async def extend(self, records: Sequence[Record], seconds: float) -> None:
            self.refused.set()
            raise SourceUnavailable("extend refused")

    queue = RefusingQueue()
    queue.send(b"q:0")

    @dataclass
    class Ok:
        request_id: str = "r-1"
        ok: bool = True
        payload: bytes = b"null"
        error_type: str | None = None

    async def held_until_refused(payload: bytes) -> Ok:
        await queue.refused.wait()  # the record is held while the heartbeat fails
        return Ok()

    with structlog.testing.capture_logs() as logs:
        async with running(queue, held_until_refused):  # type: ignore[arg-type]
            await until(queue, lambda: queue.depth() == 0)
    refused = [e for e in logs if e["event"] == "source.extend_failed"]
    assert refused, logs
    assert (refused[0]["size"], refused[0]["error"]) == (1, "extend refused")
    assert refused[0]["log_level"] == "warning"


async def test_a_hung_visibility_extension_is_abandoned_and_retried() -> None:
    """An extend that never returns (a half-open connection) used to stop the heartbeat
    for good: every later extension waited behind it and the visibility ran out."""

    class HangingQueue(MemoryQueue):
        heartbeat_interval_s = 0.05

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.retried = anyio.Event()

        async def extend(self, records: Sequence[Record], seconds: float) -> None:
            self.calls += 1
            if self.calls == 1:
                await anyio.sleep_forever()
            self.retried.set()

    queue = HangingQueue()
    queue.send(b"q:0")

    @dataclass
    class Ok:
        request_id: str = "r-1"
        ok: bool = True
        payload: bytes = b"null"
        error_type: str | None = None

    async def held_until_retried(payload: bytes) -> Ok:
        with anyio.fail_after(5):
            await queue.retried.wait()  # the record is held until the heartbeat recovers
        return Ok()

    with structlog.testing.capture_logs() as logs:
        async with running(queue, held_until_retried, poll_backoff=FAST):  # type: ignore[arg-type]
            await until(queue, lambda: queue.depth() == 0)
    abandoned = [e for e in logs if e["event"] == "source.extend_failed"]
    assert abandoned, logs
    assert "abandoned" in abandoned[0]["error"]
    assert queue.calls >= 2


async def test_a_refused_release_is_logged_and_the_message_returns_after_its_timeout() -> None:
    class RefusingRelease(MemoryQueue):
        async def release(self, records: Sequence[Record], delay_s: float) -> None:
            if not self.released_refused:
                self.released_refused = True
                raise SourceUnavailable("release refused")
            await super().release(records, delay_s)

        released_refused = False

    queue = RefusingRelease(visibility_timeout_s=0.2)
    queue.send(b"q:0")
    calls: list[int] = []

    def fail_once(records: list[dict[str, Any]]) -> None:
        calls.append(len(records))
        if len(calls) == 1:
            raise ValueError("not yet")

    with structlog.testing.capture_logs() as logs:
        async with running(queue, Handler(fn=fail_once)):
            await until(queue, lambda: queue.depth() == 0)
    (refused,) = [e for e in logs if e["event"] == "source.release_failed"]
    assert (refused["error"], refused["size"]) == ("release refused", 1)
    assert calls == [1, 1]  # redelivered by the queue's own visibility timeout


class _ResultKeepingStream(MemoryStream):
    """A stream that keeps what ``on_result`` is given, and the acks seen by then."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[tuple[list[str], bytes, int]] = []

    async def on_result(self, records: Sequence[Record], payload: bytes) -> None:
        self.results.append(([r.data.decode() for r in records], payload, len(self.acked)))


async def test_on_result_gets_each_succeeded_batch_before_its_ack() -> None:
    """The optional ``Poller.on_result`` hook (tumbling-window state): the records that
    succeeded and the handler's result, before they are acknowledged; never a failure."""
    stream = _ResultKeepingStream()
    for i in range(6):
        stream.put("s", f"r{i}".encode())
    fail = {"r3"}

    def fn(records: list[dict[str, Any]]) -> Any:
        texts = [data_of(r) for r in records]
        if fail & set(texts):
            fail.clear()
            raise ValueError("once")
        return {"state": texts}

    async with running(stream, Handler(fn), batch_size=3, window_s=0.0):
        await until(stream, lambda: len(stream.acked) == 6)
    assert [texts for texts, _payload, _acks in stream.results] == [
        ["r0", "r1", "r2"],
        ["r3", "r4", "r5"],
    ]
    first, second = stream.results
    assert json.loads(first[1]) == {"state": ["r0", "r1", "r2"]}
    assert first[2] == 0, "before the batch was acknowledged"
    assert second[2] <= 3
