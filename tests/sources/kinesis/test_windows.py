"""Tumbling windows per shard (``WindowGate``): one window at a time, the final marker
only once the window closed and all it released was handled, and a saved window resumed."""

from __future__ import annotations

from collections import deque

from eventrun.abc import Record
from eventrun.sources.kinesis._windows import MAX_STATE_BYTES, WindowGate, is_final


class _Token:
    shard_id = "shardId-0"


def _record(seq: int, at: float) -> Record:
    return Record(
        shard="shardId-0", item_id=str(seq), event={}, data=b"{}", data_key="data", timestamp=at
    )


def test_one_window_at_a_time_then_the_final_invocation() -> None:
    gate = WindowGate(10.0)
    held = deque([_record(1, 100.5), _record(2, 105.0), _record(3, 111.0), _record(4, 112.0)])
    first = gate.release(held, 100, acked=None, caught_up_past_end=False, token=_Token())
    assert [r.item_id for r in first] == ["1", "2"]
    assert gate.current == (100.0, 110.0)
    # the next window's records wait; no final invocation before "2" is handled
    assert gate.release(held, 100, acked="1", caught_up_past_end=False, token=_Token()) == []
    [final] = gate.release(held, 100, acked="2", caught_up_past_end=False, token=_Token())
    assert is_final(final)
    assert (final.item_id, final.shard) == ("2", "shardId-0")
    gate.state = {"n": 2}
    event = gate.envelope([final], "shardId-0", "arn:x")
    assert event == {
        "Records": [],
        "window": {"start": "1970-01-01T00:01:40Z", "end": "1970-01-01T00:01:50Z"},
        "state": {"n": 2},
        "shardId": "shardId-0",
        "eventSourceARN": "arn:x",
        "isFinalInvokeForWindow": True,
        "isWindowTerminatedEarly": False,
    }
    assert gate.release(held, 100, acked="2", caught_up_past_end=True, token=_Token()) == []
    gate.close()  # the final invocation succeeded
    second = gate.release(held, 100, acked="2", caught_up_past_end=False, token=_Token())
    assert [r.item_id for r in second] == ["3", "4"]
    assert gate.state == {}


def test_an_idle_shard_closes_the_window_once_caught_up_past_its_end() -> None:
    gate = WindowGate(10.0)
    held = deque([_record(1, 100.5)])
    gate.release(held, 100, acked=None, caught_up_past_end=False, token=_Token())
    assert gate.release(held, 100, acked="1", caught_up_past_end=False, token=_Token()) == []
    [final] = gate.release(held, 100, acked="1", caught_up_past_end=True, token=_Token())
    assert is_final(final)


def test_a_saved_window_resumes_with_its_state_and_closes_if_time_moved_on() -> None:
    gate = WindowGate(10.0)
    gate.restore({"start": 100.0, "end": 110.0, "state": {"n": 5}, "seq": "7"})
    assert (gate.current, gate.state, gate.released) == ((100.0, 110.0), {"n": 5}, "7")
    held = deque([_record(8, 104.0)])  # more of the same window after the restart
    [more] = gate.release(held, 100, acked="7", caught_up_past_end=False, token=_Token())
    assert more.item_id == "8"
    assert gate.saved("8") == {"start": 100.0, "end": 110.0, "state": {"n": 5}, "seq": "8"}
    other = WindowGate(10.0)
    other.restore({"start": 100.0, "end": 110.0, "state": {"n": 5}, "seq": "7"})
    held = deque([_record(8, 120.0)])  # the window ended while the daemon was down
    [final] = other.release(held, 100, acked="7", caught_up_past_end=False, token=_Token())
    assert is_final(final)
    assert [r.item_id for r in held] == ["8"]


def test_a_state_over_1_mb_ends_the_window_early_and_it_goes_on_with_a_fresh_state() -> None:
    """Lambda: isWindowTerminatedEarly when the state exceeds 1 MB; the next invocation
    continues the same window with a fresh state."""
    gate = WindowGate(10.0)
    held = deque([_record(1, 100.5), _record(2, 101.0), _record(3, 102.0)])
    [first] = gate.release(held, 1, acked=None, caught_up_past_end=False, token=_Token())
    assert first.item_id == "1"
    gate.keep({"blob": "x" * MAX_STATE_BYTES})
    assert gate.saved("1")["early"] is True, "a restart ends it early too"
    # the final goes out at once, before the window's other records, not waiting for its end
    [final] = gate.release(held, 100, acked="1", caught_up_past_end=False, token=_Token())
    assert is_final(final)
    event = gate.envelope([final], "shardId-0", "arn:x")
    assert event["isFinalInvokeForWindow"] is True
    assert event["isWindowTerminatedEarly"] is True
    assert len(event["state"]["blob"]) == MAX_STATE_BYTES
    gate.close()  # the final invocation succeeded
    rest = gate.release(held, 100, acked="1", caught_up_past_end=False, token=_Token())
    assert [r.item_id for r in rest] == ["2", "3"]
    event = gate.envelope(rest, "shardId-0", "arn:x")
    assert (event["state"], event["isWindowTerminatedEarly"]) == ({}, False)
    assert event["window"] == {"start": "1970-01-01T00:01:40Z", "end": "1970-01-01T00:01:50Z"}
    gate.keep({"n": 2})  # small again: the window ends at its end, normally
    [last] = gate.release(held, 100, acked="3", caught_up_past_end=True, token=_Token())
    assert gate.envelope([last], "shardId-0", "arn:x")["isWindowTerminatedEarly"] is False
