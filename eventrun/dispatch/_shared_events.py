"""Handing a batch event to an in-process handler without copying it.

Lambda gives every invocation a freshly deserialised event, so a handler that edits its
event never changes what a retry, a split half or the failure record sees. A process
worker gets that for free (it decodes the bytes it was sent); an ``inline`` function runs
in the daemon, and decoding the batch's JSON there just to get a private copy cost about
0.45 us per record, a twentieth of the whole Kafka inline path.

So the dispatcher of an inline function hands the handler the batch event it built and
encoded, and keeps the encoded bytes: when an invocation did not fully succeed (error,
timeout, partial failure, cancellation), every record of the batch gets its event back
decoded from those bytes, exactly as it was sent. A success needs no copy: the records
are acknowledged and dropped.

Where each record's event sits in the batch event is found before the call (by
identity: a poller's ``batch_event`` places ``record.event`` objects in its envelope);
a batch whose events are not all found that way is not shared, it is decoded as before.

A batch with ``msgspec.Struct`` events (Kafka, Redis Streams) is not handed over: the
handler needs plain JSON types, so it gets ``msgspec.to_builtins`` of the batch event, a
fresh copy made in one call, and the records keep their structs. Nothing to restore, and
nothing to encode either (0.35 us per Kafka record for the copy, where converting the
records' events, encoding the batch and finding the events cost 0.74).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, is_
from typing import Any

import msgspec

from eventrun.abc import Record

__all__ = ["event_places", "plain_events", "restore_events", "shared_event"]

_DECODER = msgspec.json.Decoder()

Path = tuple[Any, ...]
"""Keys and list indexes from the batch event down to a list of record events."""

Places = list[tuple[Path, int, int]]
"""Per list of record events: its path, the index of its first record, its length."""

_event = attrgetter("event")


def plain_events(records: Sequence[Record]) -> None:
    """Give every record a plain-JSON event (``Record.plain_event`` for a whole batch:
    struct events are converted in one ``msgspec.to_builtins`` call)."""
    structs = [record for record in records if not isinstance(record.event, dict)]
    if structs:
        plain = msgspec.to_builtins([record.event for record in structs])
        for record, event in zip(structs, plain, strict=True):
            record.event = event


def shared_event(doc: Any, records: Sequence[Record]) -> tuple[Any, Places | None]:
    """What an inline handler gets for batch event ``doc`` of ``records``, and where the
    records' events sit in it when that is ``doc`` itself (to restore them from the
    encoded batch if the batch does not fully succeed). ``(None, None)``: decode the
    encoded batch instead. A batch with struct events gets a plain copy (no places)."""
    if not all(isinstance(record.event, dict) for record in records):
        return msgspec.to_builtins(doc), None
    places = event_places(doc, records)
    return (None, None) if places is None else (doc, places)


def event_places(doc: Any, records: Sequence[Record]) -> Places | None:
    """Where the records' events sit in ``doc``: in lists, as runs in record order (every
    built-in source's envelope: ``{"Records": [...]}``, Kafka's lists per partition).
    None when they are laid out any other way (then the batch is not shared).

    Runs for every batch: a list is compared by identity with ``map`` (no interpreted
    step per record)."""
    places: Places = []
    done = _walk(doc, (), records, 0, places)
    return places if done == len(records) else None


def _walk(node: Any, path: Path, records: Sequence[Record], done: int, places: Places) -> int:
    """Visit ``node``'s containers in document order; return how many records' events
    were found so far (-1: an event out of place)."""
    if isinstance(node, list):
        count = len(node)
        if count and done < len(records) and node[0] is records[done].event:
            run = records[done : done + count]
            if len(run) != count or not all(map(is_, node, map(_event, run))):
                return -1
            places.append((path, done, count))
            return done + count
        items: Any = enumerate(node)
    elif isinstance(node, dict):
        items = node.items()
    else:
        return done
    for key, value in items:
        if isinstance(value, dict | list):
            done = _walk(value, (*path, key), records, done, places)
            if done < 0:
                return -1
    return done


def restore_events(records: Sequence[Record], places: Places, payload: bytes) -> None:
    """Give each record a fresh copy of its event as sent (``payload`` is the encoded
    batch event the places were found in)."""
    sent = _DECODER.decode(payload)
    for path, first, count in places:
        node = sent
        for key in path:
            node = node[key]
        for offset in range(count):
            records[first + offset].event = node[offset]
