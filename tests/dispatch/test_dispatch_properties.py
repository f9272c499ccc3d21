"""Property-based tests of the dispatcher: ordering, bisect and gap-aware acknowledgement."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventrun.abc import Record
from eventrun.dispatch._acks import AckTracker
from eventrun.testing import MemorySink, MemoryStream
from tests._dispatch_kit import Handler, data_of, running, until
from tests._hypothesis import examples

FAST = settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _record(shard: str, n: int) -> Record:
    return Record(
        shard=shard, item_id=str(n), event={}, data=b"", data_key="data", timestamp=0.0, token=n
    )


@given(
    shards=st.integers(1, 4),
    count=st.integers(1, 60),
    order=st.randoms(use_true_random=False),
    poll=st.integers(0, 25),
    runs=st.booleans(),
)
def test_ack_tracker_releases_exactly_the_contiguous_prefix(
    shards: int, count: int, order: Any, poll: int, runs: bool
) -> None:
    """Records registered one by one (``poll`` 0) or a poll at a time (``register_all``),
    shards interleaved or in runs as a Kafka poll gives them."""
    tracker = AckTracker()
    records = [_record(f"s{i % shards}", i) for i in range(count)]
    if runs:  # shard by shard, each shard's records in order
        records.sort(key=lambda r: (r.shard, int(r.token)))  # type: ignore[call-overload]
    if poll == 0:
        pending = [tracker.register(record) for record in records]
    else:
        pending = []
        for start in range(0, count, poll):
            pending.extend(tracker.register_all(records[start : start + poll]))
    assert [p.record for p in pending] == records
    completion = list(pending)
    order.shuffle(completion)
    acked: list[Record] = []
    done: set[int] = set()
    for item in completion:
        acked.extend(tracker.complete([item]))
        done.add(int(item.record.token))  # type: ignore[call-overload]
        # invariant: per shard, what is acked is exactly the longest completed prefix
        for s in range(shards):
            ids = [i for i in range(count) if i % shards == s]
            prefix = 0
            while prefix < len(ids) and ids[prefix] in done:
                prefix += 1
            acked_ids = [int(r.token) for r in acked if r.shard == f"s{s}"]  # type: ignore[call-overload]
            assert acked_ids == ids[:prefix]
    assert sorted(int(r.token) for r in acked) == list(range(count))  # type: ignore[call-overload]


@FAST
@given(
    keys=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=120),
    factor=st.integers(1, 10),
    batch=st.integers(1, 20),
)
def test_order_holds_per_key_for_any_lane_count(keys: list[str], factor: int, batch: int) -> None:
    async def scenario() -> None:
        stream = MemoryStream()
        seq: dict[str, int] = {}
        for key in keys:
            seq[key] = seq.get(key, -1) + 1
            stream.put("s", f"{key}:{seq[key]}".encode(), key=key)
        handler = Handler()
        async with running(stream, handler, batch_size=batch, parallelization_factor=factor):
            await until(stream, lambda: stream.lag() == 0)
        seen: dict[str, list[int]] = {}
        for call in handler.calls:
            for r in call:
                key, n = data_of(r).split(":")
                seen.setdefault(key, []).append(int(n))
        assert seen == {k: list(range(n + 1)) for k, n in seq.items()}

    anyio.run(scenario)


@FAST
@given(
    size=st.integers(1, 200),
    poison=st.sets(st.integers(0, 199), max_size=3),
    batch=st.integers(1, 200),
)
def test_bisect_isolates_every_poison_record(size: int, poison: set[int], batch: int) -> None:
    poison = {p for p in poison if p < size}

    async def scenario() -> None:
        stream = MemoryStream()
        for i in range(size):
            stream.put("s", f"s:{i}".encode())
        dlq = MemorySink()
        ok: list[int] = []

        def handle(records: list[dict[str, Any]]) -> None:
            values = [int(data_of(r).split(":")[1]) for r in records]
            if poison & set(values):
                raise ValueError("poison")
            ok.extend(values)

        async with running(
            stream,
            Handler(fn=handle),
            batch_size=batch,
            bisect=True,
            max_retry_attempts=0,
            on_failure=dlq,
        ):
            await until(stream, lambda: stream.lag() == 0)
        # every good record succeeded exactly once, in order; each poison record went to
        # the DLQ alone
        assert ok == [i for i in range(size) if i not in poison]
        import json

        dead = [
            int(data_of(r).split(":")[1])
            for m in dlq.messages
            for r in json.loads(m.payload)["payload"]["Records"]
        ]
        assert sorted(dead) == sorted(poison)
        assert stream.committed == {"s": size}

    anyio.run(scenario)
