"""Dead-letter queue tooling: list, show, redrive and purge ``local:`` queues.

Pure store operations, shared by the HTTP API (``/dlq``, a running daemon) and the CLI
(``eventrun dlq`` straight on the config's store). Redrive re-invokes asynchronously:

* the event is the original one: a stream failure record's ``payload`` (the batch event),
  an asynchronous destination record's ``requestPayload``, or, for any other message, the
  message itself;
* the function is ``to``, or the one named by the record's
  ``requestContext.functionArn``;
* one entry at a time, the event is put in ``async:FUNCTION`` and only then is the DLQ
  entry acknowledged (removed): a crash in between duplicates at most one entry and loses
  none. Entries that cannot be redriven (no function known, unknown function) stay put and
  are reported as skipped.

Listing is paged and bounded in bytes: :func:`list_page` returns at most ``limit`` entries
and about :data:`PAGE_BYTES` of JSON (always at least one entry), with the offset of the
next page; a payload over :data:`PREVIEW_BYTES` is cut to a text preview there and the
entry marked ``"truncated": true`` (:func:`get_entry`, ``dlq show``, gives it whole).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from eventrun.exceptions import DlqError
from eventrun.store._base import QueueEntry, Store

__all__ = [
    "DlqError",
    "RedriveReport",
    "entry_doc",
    "get_entry",
    "list_entries",
    "list_page",
    "list_queues",
    "normalise_queue",
    "purge",
    "redrive",
    "redrive_target",
    "store_enqueue",
]

Enqueue = Callable[[str, bytes, dict[str, Any]], Awaitable[str]]
"""``(function, event JSON, meta) -> request id``: queue one asynchronous invocation."""
Progress = Callable[[int], None]

PAGE_BYTES = 1 << 20
"""The most JSON one page of a listing holds (one entry more than that is never added)."""
PREVIEW_BYTES = 64 * 1024
"""Payloads longer than this are cut to a preview in listings."""
_PEEK_CHUNK = 16
"""Entries read from the store at a time while filling a page (bounds the memory a page
of large entries takes)."""
_ENCODER = msgspec.json.Encoder()


def normalise_queue(name: str) -> str:
    """``orders-failed`` -> ``local:orders-failed``; refuses other kinds of queue."""
    if ":" not in name:
        return f"local:{name}"
    if not name.startswith("local:") or name == "local:":
        raise DlqError(f"dlq: {name!r} is not a local queue; expected local:NAME")
    return name


def _decode(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload.decode(errors="replace")


def _arn_function(arn: Any) -> str | None:
    """``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`` -> ``NAME``."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":")
    if len(parts) >= 7 and parts[5] == "function" and parts[6]:
        return parts[6]
    return None


def redrive_target(doc: Any) -> tuple[Any, str | None, str]:
    """``(original event, function or None, kind)`` of a DLQ message; ``kind`` is
    ``stream`` (failure record), ``async`` (destination record) or ``message``."""
    if isinstance(doc, dict) and isinstance(doc.get("requestContext"), dict):
        function = _arn_function(doc["requestContext"].get("functionArn"))
        if "requestPayload" in doc:
            return doc["requestPayload"], function, "async"
        if "payload" in doc:
            return doc["payload"], function, "stream"
    return doc, None, "message"


def entry_doc(
    entry: QueueEntry, *, with_payload: bool = True, preview: int | None = None
) -> dict[str, Any]:
    """A JSON summary of a DLQ entry (``payload`` decoded when it is JSON). With
    ``preview``, a payload longer than that many bytes is given as the text of its first
    ``preview`` bytes and ``truncated`` is true."""
    doc = _decode(entry.payload)
    _event, function, kind = redrive_target(doc)
    context = doc.get("requestContext", {}) if isinstance(doc, dict) else {}
    out: dict[str, Any] = {
        "id": entry.id,
        "queue": entry.queue,
        "enqueued_at": entry.enqueued_at,
        "size_bytes": len(entry.payload),
        "kind": kind,
        "function": function,
        "condition": context.get("condition") if isinstance(context, dict) else None,
        "request_id": context.get("requestId") if isinstance(context, dict) else None,
        "meta": dict(entry.meta),
    }
    if with_payload:
        if preview is not None and len(entry.payload) > preview:
            out["payload"] = entry.payload[:preview].decode(errors="replace")
            out["truncated"] = True
        else:
            out["payload"] = doc
            out["truncated"] = False
    return out


async def list_queues(store: Store) -> dict[str, int]:
    """Every non-empty ``local:`` queue and its depth."""
    names = [q for q in await store.queues() if q.startswith("local:")]
    return {name: await store.depth(name) for name in names}


async def list_page(
    store: Store,
    queue: str,
    *,
    limit: int = 100,
    offset: int = 0,
    max_bytes: int = PAGE_BYTES,
) -> tuple[list[dict[str, Any]], int | None]:
    """``(entries, next offset or None)``: up to ``limit`` entries from ``offset``, oldest
    first, stopping before the JSON of the page would pass ``max_bytes`` (a first entry
    is always included); payloads over :data:`PREVIEW_BYTES` are previews."""
    queue = normalise_queue(queue)
    out: list[dict[str, Any]] = []
    used = 0
    position = offset
    while len(out) < limit:
        chunk = await store.peek(queue, limit=min(_PEEK_CHUNK, limit - len(out)), offset=position)
        if not chunk:
            return out, None
        for entry in chunk:
            doc = entry_doc(entry, preview=PREVIEW_BYTES)
            size = len(_ENCODER.encode(doc))
            if out and used + size > max_bytes:
                return out, position
            out.append(doc)
            used += size
            position += 1
    return out, position if position < await store.depth(queue) else None


async def list_entries(
    store: Store, queue: str, *, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """The first page of :func:`list_page`."""
    return (await list_page(store, queue, limit=limit, offset=offset))[0]


async def get_entry(store: Store, queue: str, entry_id: str) -> dict[str, Any] | None:
    entry = await store.get(normalise_queue(queue), entry_id)
    return None if entry is None else entry_doc(entry)


async def purge(store: Store, queue: str) -> int:
    return await store.purge(normalise_queue(queue))


def store_enqueue(store: Store) -> Enqueue:
    """An :data:`Enqueue` that puts straight into the store (no daemon needed: a daemon
    leases ``async:FUNCTION`` when it next polls)."""

    async def enqueue(function: str, event: bytes, meta: dict[str, Any]) -> str:
        rid = str(uuid.uuid4())
        await store.put(f"async:{function}", [event], meta={**meta, "request_id": rid})
        return rid

    return enqueue


@dataclass(slots=True)
class RedriveReport:
    queue: str
    dry_run: bool
    redriven: list[dict[str, Any]] = field(default_factory=list)
    """``{"id", "function", "request_id"}`` per entry (request_id None on a dry run)."""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """``{"id", "reason"}`` per entry left in the queue."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "dry_run": self.dry_run,
            "redriven": self.redriven,
            "skipped": self.skipped,
        }


async def redrive(
    store: Store,
    queue: str,
    *,
    functions: Collection[str],
    enqueue: Enqueue,
    to: str | None = None,
    limit: int | None = None,
    ids: Sequence[str] | None = None,
    dry_run: bool = False,
    skip_success: bool = False,
    progress: Progress | None = None,
) -> RedriveReport:
    """Redrive up to ``limit`` entries (all by default; only ``ids`` when given) of
    ``queue`` to ``to`` or their own function, oldest first. ``functions`` are the
    configured function names; ``skip_success`` leaves success destination records
    (condition ``Success``) alone. Raises DlqError for a bad queue or an unknown ``to``."""
    queue = normalise_queue(queue)
    if to is not None and to not in functions:
        raise DlqError(f"dlq redrive: no function {to!r} (have: {', '.join(sorted(functions))})")
    report = RedriveReport(queue, dry_run)
    wanted = None if ids is None else set(ids)
    offset = 0  # entries before it stay in the queue (skipped, or listed on a dry run)
    while limit is None or len(report.redriven) < limit:
        page = await store.peek(queue, limit=100, offset=offset)
        if not page:
            break
        for entry in page:
            if limit is not None and len(report.redriven) >= limit:
                break
            if wanted is not None and entry.id not in wanted:
                offset += 1
                continue
            if skip_success and _is_success(entry):
                report.skipped.append({"id": entry.id, "reason": "a success record"})
                offset += 1
                continue
            done = await _redrive_one(store, entry, functions, enqueue, to, dry_run, report)
            if not done or dry_run:
                offset += 1
            if done and progress is not None:
                progress(1)
        if wanted is not None and len(report.redriven) + len(report.skipped) >= len(wanted):
            break
    return report


def _is_success(entry: QueueEntry) -> bool:
    doc = _decode(entry.payload)
    context = doc.get("requestContext") if isinstance(doc, dict) else None
    return isinstance(context, dict) and context.get("condition") == "Success"


async def _redrive_one(
    store: Store,
    entry: QueueEntry,
    functions: Collection[str],
    enqueue: Enqueue,
    to: str | None,
    dry_run: bool,
    report: RedriveReport,
) -> bool:
    event, origin, _kind = redrive_target(_decode(entry.payload))
    function = to or origin
    if function is None:
        report.skipped.append({"id": entry.id, "reason": "no function known; use --to"})
        return False
    if function not in functions:
        reason = f"function {function!r} is not configured; use --to"
        report.skipped.append({"id": entry.id, "reason": reason})
        return False
    rid = None
    if not dry_run:
        meta = {"redriven_from": f"{entry.queue}/{entry.id}", **_pipeline_meta(entry, function)}
        rid = await enqueue(function, msgspec.json.encode(event), meta)
        await store.ack(entry.queue, [entry.id])
    report.redriven.append({"id": entry.id, "function": function, "request_id": rid})
    return True


def _pipeline_meta(entry: QueueEntry, function: str) -> dict[str, Any]:
    """``trigger`` and ``key`` of a stream failure record redriven to its own function, so
    the async invoker publishes the outputs to that trigger's ``on_success`` (pipelines)."""
    attributes = entry.meta.get("attributes")
    trigger = attributes.get("trigger") if isinstance(attributes, dict) else None
    if not isinstance(trigger, str) or not trigger.startswith(function + "/"):
        return {}
    key = entry.meta.get("key")
    return {"trigger": trigger, **({"key": key} if isinstance(key, str) else {})}
