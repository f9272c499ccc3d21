"""Lanes: FIFO batches, and the keyed lane that never lets a key run twice at once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventrun.abc import Record
from eventrun.dispatch._acks import Pending
from eventrun.dispatch._lanes import KeyedLane, Lane
from tests._hypothesis import examples


def _pending(key: str | None, seq: int, size: int = 10) -> Pending:
    record = Record(
        shard="s",
        item_id=seq,
        event={},
        data=b"x" * size,
        data_key="data",
        timestamp=0.0,
        key=key,
    )
    return Pending(record, None, arrived=float(seq))


def _seqs(batch: list[Pending]) -> list[int]:
    return [int(str(p.record.item_id)) for p in batch]


def test_fifo_lane_takes_in_order_up_to_count_and_payload() -> None:
    lane = Lane()
    for i in range(5):
        lane.put(_pending(None, i, size=100))
    assert _seqs(lane.take(2, 10_000)) == [0, 1]
    # 356 bytes each (data + 256 overhead): two fit in 800, the third does not
    assert _seqs(lane.take(10, 800)) == [2, 3]
    assert lane.available() == 1
    assert _seqs(lane.drain()) == [4]
    assert lane.available() == 0


def test_keyed_lane_holds_a_key_until_its_batch_finished() -> None:
    lane = KeyedLane()
    for i, key in enumerate(["a", "b", "a", "c"]):
        lane.put(_pending(key, i))
    first = lane.take(2, 10_000)
    assert _seqs(first) == [0, 1]  # the shard's oldest records
    second = lane.take(10, 10_000)
    assert _seqs(second) == [3]  # a's next record waits for the first batch
    lane.put(_pending("a", 4))
    assert lane.available() == 0  # a is still running in the first batch
    assert lane.take(10, 10_000) == []
    lane.finished(first)
    assert lane.available() == 2
    assert _seqs(lane.take(10, 10_000)) == [2, 4]


def test_keyed_lane_does_not_tie_keys_to_a_loop() -> None:
    """Two loops on one shard: the second always gets work while a key other than the
    running one waits, whatever the keys hash to."""
    lane = KeyedLane()
    for i in range(6):
        lane.put(_pending("hot" if i % 2 else f"cold{i}", i))
    one = lane.take(1, 10_000)
    two = lane.take(1, 10_000)
    assert _seqs(one) == [0]
    assert _seqs(two) == [1]
    assert lane.available() == 2  # cold2, cold4; the rest of "hot" waits for `two`


def test_keyed_lane_full_batch_keeps_the_rest_of_its_key_claimed() -> None:
    lane = KeyedLane()
    for i in range(5):
        lane.put(_pending("a", i))
    lane.put(_pending("b", 5))
    batch = lane.take(3, 10_000)
    assert _seqs(batch) == [0, 1, 2]
    assert _seqs(lane.take(10, 10_000)) == [5]  # not a's 3 and 4
    lane.finished(batch)
    assert _seqs(lane.take(10, 10_000)) == [3, 4]


def test_keyed_lane_payload_limit_leaves_the_next_key_unclaimed() -> None:
    lane = KeyedLane()
    lane.put(_pending("a", 0, size=500))
    lane.put(_pending("b", 1, size=500))
    assert _seqs(lane.take(10, 1000)) == [0]
    assert _seqs(lane.take(10, 1000)) == [1]  # b was not claimed by the first take


def test_keyed_lane_freed_keys_go_ahead_of_younger_ones() -> None:
    lane = KeyedLane()
    lane.put(_pending("a", 0))
    held = lane.take(1, 10_000)
    lane.put(_pending("a", 1))
    lane.put(_pending("b", 2))
    lane.finished(held)
    assert _seqs(lane.take(1, 10_000)) == [1]


def test_keyed_lane_serves_the_oldest_record_first_so_no_key_starves() -> None:
    """A busy key freed again and again must not overtake an older record of another key
    (the shard's acknowledgement could not pass it, and it would wait forever)."""
    lane = KeyedLane()
    for i, key in enumerate(["k", "k", "p", "k", "k"]):
        lane.put(_pending(key, i))
    order: list[int] = []
    while lane.available():
        batch = lane.take(1, 10_000)
        order += _seqs(batch)
        lane.finished(batch)
    assert order == [0, 1, 2, 3, 4]


def test_keyed_lane_drain_returns_everything_waiting_in_arrival_order() -> None:
    lane = KeyedLane()
    for i, key in enumerate(["a", "b", "a", None, "b"]):
        lane.put(_pending(key, i))
    running = lane.take(1, 10_000)
    assert _seqs(running) == [0]
    assert _seqs(lane.drain()) == [1, 2, 3, 4]
    assert lane.available() == 0
    lane.finished(running)  # after a revoke: nothing comes back
    assert lane.available() == 0


@settings(max_examples=examples(200), deadline=None)
@given(
    keys=st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=1, max_size=60),
    steps=st.lists(st.tuples(st.integers(1, 6), st.booleans()), max_size=80),
)
def test_keyed_lane_keeps_key_order_and_loses_nothing(
    keys: list[str | None], steps: list[tuple[int, bool]]
) -> None:
    """Any interleaving of takes and finishes: each batch is exactly the oldest waiting
    records of keys no running batch holds (checked against a plain list model), so no
    key is in two running batches, and every record is handed out exactly once."""
    lane = KeyedLane()
    for i, key in enumerate(keys):
        lane.put(_pending(key, i))
    waiting = list(range(len(keys)))
    busy: list[set[str | None]] = []
    running: list[list[Pending]] = []
    handed: list[int] = []
    for count, finish_oldest in [*steps, *[(6, True)] * (2 * len(keys))]:
        if finish_oldest and running:
            lane.finished(running.pop(0))
            busy.pop(0)
        claimed = set().union(*busy)
        expected = [i for i in waiting if keys[i] not in claimed][:count]
        assert lane.available() == len([i for i in waiting if keys[i] not in claimed])
        batch = lane.take(count, 10_000)
        assert _seqs(batch) == expected
        if batch:
            running.append(batch)
            busy.append({keys[i] for i in expected})
            handed += expected
            waiting = [i for i in waiting if i not in expected]
    assert sorted(handed) == list(range(len(keys)))


def _reference_take(items: list[Pending], count: int, max_bytes: int) -> list[Pending]:
    """The lane's batching rule, spelled out: records in order while the count and the
    payload allow, but always at least one."""
    batch: list[Pending] = []
    payload = 0
    for p in items:
        if len(batch) == count or (batch and payload + p.record.size > max_bytes):
            break
        batch.append(p)
        payload += p.record.size
    return batch


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.lists(st.integers(0, 3000), min_size=1, max_size=8)),
            st.tuples(st.just("take"), st.tuples(st.integers(1, 6), st.integers(300, 9000))),
            st.tuples(st.just("remove"), st.sampled_from(["a", "b"])),
        ),
        max_size=40,
    )
)
def test_fifo_lane_payload_tracking_matches_the_batching_rule(
    ops: list[tuple[str, object]],
) -> None:
    """The lane keeps a running payload total to take by count alone when everything
    waiting fits; whatever the puts, takes and removals, it batches as the rule says."""
    lane = Lane()
    model: list[Pending] = []
    seq = 0
    for op, arg in ops:
        if op == "put":
            run = []
            for size in arg:  # type: ignore[attr-defined]
                p = _pending(None, seq, size)
                p.record.shard = "ab"[seq % 2]
                run.append(p)
                seq += 1
            if len(run) == 1:
                lane.put(run[0])
            else:
                lane.put_all(run)
            model += run
        elif op == "take":
            count, max_bytes = arg  # type: ignore[misc]
            expected = _reference_take(model, count, max_bytes)
            assert lane.take(count, max_bytes) == expected
            del model[: len(expected)]
        else:
            removed = lane.remove_shards({arg})  # type: ignore[arg-type]
            assert removed == [p for p in model if p.record.shard == arg]
            model = [p for p in model if p.record.shard != arg]
        assert lane.available() == len(model)
        assert lane.payload == sum(p.record.size for p in model)
    assert lane.drain() == model
    assert lane.payload == 0
