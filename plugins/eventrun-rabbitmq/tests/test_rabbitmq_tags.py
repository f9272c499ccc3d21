"""TagLedger: a multiple ack never covers a delivery that was not meant to be acked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eventrun_rabbitmq._tags import TagLedger


def ledger(n: int) -> TagLedger:
    tags = TagLedger()
    for tag in range(1, n + 1):
        tags.delivered(tag)
    return tags


def test_a_completed_prefix_is_one_multiple_ack() -> None:
    tags = ledger(5)
    plan = tags.plan_ack([1, 2, 3])
    assert (plan.multiple_upto, plan.singles) == (3, [])
    assert len(tags) == 2


def test_a_gap_stops_the_prefix_and_the_rest_go_singly() -> None:
    tags = ledger(6)
    plan = tags.plan_ack([1, 2, 4, 6])
    assert (plan.multiple_upto, plan.singles) == (2, [4, 6])
    # 3 is released (rejected): 4 was acked singly, so the next multiple ack may pass it
    assert tags.settle([3]) == [3]
    plan = tags.plan_ack([5])
    assert (plan.multiple_upto, plan.singles) == (5, [])
    assert len(tags) == 0


def test_unknown_and_repeated_tags_are_ignored() -> None:
    tags = ledger(3)
    assert tags.plan_ack([1]).multiple_upto == 1
    plan = tags.plan_ack([1, 99])
    assert (plan.multiple_upto, plan.singles) == (None, [])
    assert tags.settle([1, 99]) == []


@given(st.lists(st.tuples(st.sampled_from(["ack", "settle"]), st.sets(st.integers(1, 30)))))
def test_multiple_acks_cover_only_acked_or_settled_tags(
    steps: list[tuple[str, set[int]]],
) -> None:
    tags = ledger(30)
    acked: set[int] = set()
    settled: set[int] = set()
    for op, chosen in steps:
        if op == "settle":
            settled.update(tags.settle(chosen))
            continue
        fresh = {t for t in chosen if t not in acked and t not in settled}
        plan = tags.plan_ack(chosen)
        acked.update(fresh)
        if plan.multiple_upto is not None:
            covered = set(range(1, plan.multiple_upto + 1))
            assert covered <= acked | settled, "a multiple ack covered a live delivery"
        assert set(plan.singles) <= fresh
    assert len(tags) == 30 - len(acked | settled)
