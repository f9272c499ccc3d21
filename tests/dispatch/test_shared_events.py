"""Where records' events sit in a batch event, and getting them back as sent."""

from __future__ import annotations

from typing import Any

import msgspec

from eventrun.abc import Record
from eventrun.dispatch._shared_events import (
    event_places,
    plain_events,
    restore_events,
    shared_event,
)
from eventrun.sources.kafka._records import batch_event as kafka_batch_event


def _records(shards: list[str]) -> list[Record]:
    return [
        Record(shard, str(i), {"n": i, "nested": {"tags": [i]}}, b"x", "data", 0.0)
        for i, shard in enumerate(shards)
    ]


def test_records_list_envelope() -> None:
    records = _records(["s"] * 5)
    doc = {"Records": [r.event for r in records]}
    assert event_places(doc, records) == [(("Records",), 0, 5)]


def test_kafka_envelope_one_list_per_partition() -> None:
    records = _records(["t-0", "t-0", "t-1"])
    doc = kafka_batch_event(records, "127.0.0.1:9092")
    places = event_places(doc, records)
    assert places == [(("records", "t-0"), 0, 2), (("records", "t-1"), 2, 1)]


def test_events_out_of_record_order_are_not_shared() -> None:
    records = _records(["a", "b", "a"])  # Kafka groups a's together: [a0, a2], [b1]
    doc = kafka_batch_event(records, "x")
    assert event_places(doc, records) is None


def test_a_copied_event_is_not_shared() -> None:
    records = _records(["s"] * 3)
    doc = {"Records": [records[0].event, dict(records[1].event), records[2].event]}
    assert event_places(doc, records) is None


def test_missing_and_extra_events_are_not_shared() -> None:
    records = _records(["s"] * 3)
    assert event_places({"Records": [r.event for r in records[:2]]}, records) is None
    extra = {"n": 9}
    doc = {"Records": [r.event for r in records] + [extra]}
    assert event_places(doc, records) is None
    assert event_places({"Records": []}, records) is None


def test_restore_gives_back_what_was_sent_whatever_the_handler_did() -> None:
    records = _records(["t-0", "t-0", "t-1"])
    doc = kafka_batch_event(records, "x")
    payload = msgspec.json.encode(doc)
    places = event_places(doc, records)
    assert places is not None
    shared: Any = doc  # what an inline handler received
    shared["records"]["t-0"][0]["n"] = "changed"
    shared["records"]["t-0"][1]["nested"]["tags"].append("added")
    shared["records"]["t-1"].clear()
    shared["records"].pop("t-0")
    restore_events(records, places, payload)
    assert [r.event for r in records] == [
        {"n": 0, "nested": {"tags": [0]}},
        {"n": 1, "nested": {"tags": [1]}},
        {"n": 2, "nested": {"tags": [2]}},
    ]
    assert records[0].event is not records[1].event


class _Event(msgspec.Struct, rename="camel"):
    event_id: int
    blob: bytes


def test_plain_events_turn_structs_into_their_json_and_keep_dicts() -> None:
    kept = {"n": 1}
    records = [
        Record("s", "0", _Event(0, b"\x00\xff"), b"x", "data", 0.0),
        Record("s", "1", kept, b"x", "data", 0.0),
        Record("s", "2", _Event(2, b"hi"), b"x", "data", 0.0),
    ]
    plain_events(records)
    assert [r.event for r in records] == [
        {"eventId": 0, "blob": "AP8="},
        {"n": 1},
        {"eventId": 2, "blob": "aGk="},
    ]
    assert records[1].event is kept
    assert msgspec.json.encode(records[0].event) == b'{"eventId":0,"blob":"AP8="}'


def test_record_plain_event_swaps_in_the_dict_once() -> None:
    record = Record("s", "0", _Event(7, b"a"), b"x", "data", 0.0)
    first = record.plain_event()
    assert first == {"eventId": 7, "blob": "YQ=="}
    assert record.event is first
    assert record.plain_event() is first


def _kafka_like(records: list[Record]) -> dict[str, Any]:
    return {"eventSource": "x", "records": {"s": [r.event for r in records]}}


def test_struct_events_are_shared_as_a_plain_copy_and_the_records_keep_them() -> None:
    records = [Record("s", str(i), _Event(i, b"\x01"), b"x", "data", 0.0) for i in range(3)]
    events = [r.event for r in records]
    doc = _kafka_like(records)
    shared, places = shared_event(doc, records)
    assert places is None  # nothing to restore: the handler never holds a record's event
    assert shared == msgspec.json.decode(msgspec.json.encode(doc))
    assert shared is not doc
    shared["records"]["s"][0]["eventId"] = "changed"  # what a handler may do
    shared["records"]["s"].clear()
    assert [r.event for r in records] == events
    assert all(r.event is e for r, e in zip(records, events, strict=True))
    assert msgspec.json.encode(records[0].event) == b'{"eventId":0,"blob":"AQ=="}'


def test_a_batch_mixing_struct_and_dict_events_is_copied_whole() -> None:
    kept = {"n": 1}
    records = [
        Record("s", "0", _Event(0, b"a"), b"x", "data", 0.0),
        Record("s", "1", kept, b"x", "data", 0.0),
    ]
    shared, places = shared_event(_kafka_like(records), records)
    assert places is None
    assert shared["records"]["s"] == [{"eventId": 0, "blob": "YQ=="}, {"n": 1}]
    assert shared["records"]["s"][1] is not kept  # a copy: the record's dict stays as is
    shared["records"]["s"][1]["n"] = 2
    assert kept == {"n": 1}


def test_dict_events_are_shared_themselves_with_their_places() -> None:
    records = [Record("s", str(i), {"n": i}, b"x", "data", 0.0) for i in range(2)]
    doc = _kafka_like(records)
    shared, places = shared_event(doc, records)
    assert shared is doc
    assert places == [(("records", "s"), 0, 2)]
    # laid out where the events cannot be found: not shared, decoded from the bytes
    assert shared_event({"Records": [{"n": 0}, {"n": 1}]}, records) == (None, None)
