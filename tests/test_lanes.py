"""Lanes: FIFO batches, and the keyed lane that never lets a key run twice at once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventrun._acks import Pending
from eventrun._lanes import KeyedLane, Lane
from eventrun.abc import Record


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


@settings(max_examples=200, deadline=None)
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
