"""The chaos ledger: produced records, what handlers saw, and the verdict.

Every produced record carries ``id`` (unique), ``key`` and ``seq`` (1, 2, 3... per key).
The handler in :data:`HANDLER_SOURCE` (copied into each test's app folder as
``chaos_app.py``) appends one JSON line per handled record to ``$LEDGER`` with a single
``write`` on an ``O_APPEND`` descriptor *after* the whole batch succeeded, so the ledger's
line order is the order in which batches were handled, across workers and daemon restarts.

Order under at-least-once delivery: a redelivered duplicate (after a crash or a kill) may
legitimately repeat earlier sequence numbers. A violation is a record of a key handled
successfully while some *earlier* record of that key had never been handled yet — for
that key, ``seq`` exceeds the contiguous prefix of handled seqs plus one.

Duplicates are bounded too (a run that never acknowledged anything would otherwise pass).
A record is handled twice only if a handler started it (and wrote it to the ledger, then
or later) but its acknowledgement had not reached the broker when the daemon was
disrupted (killed, cut off from its broker, stopped past its grace). At that moment, per
batch running in parallel, at most two batches are in that state: the batch being handled
or just handled whose result the daemon has not settled yet, and the batch completed
before it whose acknowledgement (an XACK, a Kafka commit, an SQS delete) has not returned
yet (acks go out as soon as a batch completes, one round trip at a time; the tests'
handler ``DELAY`` keeps a batch longer than an ack round trip, so no lane completes a
second batch while an ack is out). Hence :func:`duplicate_bound`, the structural bound::

    duplicates <= disruptions x batch_size x parallel_batches x 2
    parallel_batches = min(concurrency, shards x parallelization_factor)

(``shards``: streams or partitions; for SQS the dispatcher's queue lanes.) A disruption
with nothing in flight adds nothing, so a run may well stay far below the bound.

The kill tests measure the in-flight work itself: with ``$STARTED`` set the handler logs
every record (``id`` and broker position ``pos``) when its batch starts, and right after
each kill the test asks the broker which of the records started in that daemon's life are
still unacknowledged (:func:`in_flight`). Every duplicate is such a record (a record
handled n times was started and left unacknowledged by n - 1 killed daemons), so
``duplicates <= sum of in-flight over the kills`` exactly, and each kill's in-flight count
must itself stay within the structural bound's share (``batch_size x parallel_batches x 2``):
that is what "the daemon acknowledges eagerly" means.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HANDLER_SOURCE = r'''
"""Chaos ledger handler (Redis Streams, Kafka and SQS events).

Environment: LEDGER (required), STARTED (records logged when their batch starts), DELAY
(seconds per batch), ATTEMPTS (a directory: a record
whose ``poison`` field names a failure kind fails on its first ``fails`` attempts, counted
by appending a byte to ATTEMPTS/<id> before failing), MEMORY_MB (for the "memory" kind).
"""
import base64
import json
import os
import signal
import time


def _append(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _records(event):
    """(fields, broker position) per record: ``stream/entry id``, ``topic/partition/offset``
    or the SQS message id."""
    if "Records" in event:
        for record in event["Records"]:
            if "redis" in record:
                entry = record["redis"]
                yield dict(entry["fields"]), entry["stream"] + "/" + entry["id"]
            else:
                yield json.loads(record["body"]), record["messageId"]
    else:
        for batch in event["records"].values():
            for r in batch:
                pos = f"{r['topic']}/{r['partition']}/{r['offset']}"
                yield json.loads(base64.b64decode(r["value"])), pos


def _fail(kind):
    if kind == "exception":
        raise RuntimeError("poison record")
    if kind == "exit":
        os._exit(3)
    if kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    if kind == "timeout":
        time.sleep(3600)
    if kind == "memory":
        hog = b"\x01" * ((int(os.environ["MEMORY_MB"]) + 96) * 1024 * 1024)
        time.sleep(0.01)
        del hog
        return
    raise AssertionError(kind)


def handler(event, context):
    records = list(_records(event))
    docs = [doc for doc, _ in records]
    started = os.environ.get("STARTED")
    if started:
        lines = "".join(json.dumps({"id": d["id"], "pos": p}) + "\n" for d, p in records)
        _append(started, lines.encode())
    attempts = os.environ.get("ATTEMPTS")
    for doc in docs:
        kind = doc.get("poison")
        if kind and attempts:
            path = os.path.join(attempts, doc["id"])
            tried = os.path.getsize(path) if os.path.exists(path) else 0
            if tried < int(doc.get("fails", 1)):
                _append(path, b".")
                _fail(kind)
    delay = float(os.environ.get("DELAY") or 0)
    if delay:
        time.sleep(delay)
    lines = "".join(
        json.dumps({"id": d["id"], "key": d["key"], "seq": int(d["seq"]), "pid": os.getpid()})
        + "\n"
        for d in docs
    )
    _append(os.environ["LEDGER"], lines.encode())
    return None
'''


def plan(
    count: int, keys: int, *, prefix: str = "r", extra: dict[int, dict[str, str]] | None = None
) -> list[dict[str, str]]:
    """``count`` records spread round-robin over ``keys`` keys, ``seq`` counted per key;
    ``extra[i]`` adds fields (``poison``, ``fails``, or its own ``key``) to record ``i``."""
    seqs: Counter[str] = Counter()
    out = []
    for i in range(count):
        fields = (extra or {}).get(i, {})
        key = fields.get("key", f"k{i % keys}")
        seqs[key] += 1
        doc = {"id": f"{prefix}{i:06d}", "key": key, "seq": str(seqs[key]), "pad": "x" * 32}
        doc.update(fields)
        out.append(doc)
    return out


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Complete lines only (a concurrent append may be half visible)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def handled_ids(path: Path) -> set[str]:
    return {line["id"] for line in read_ledger(path)}


def order_violations(lines: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """``(key, contiguous prefix handled so far, seq)`` for every record handled while an
    earlier record of its key had never been handled (duplicates never count)."""
    handled: dict[str, set[int]] = {}
    prefix: Counter[str] = Counter()
    bad = []
    for line in lines:
        key, seq = line["key"], line["seq"]
        seen = handled.setdefault(key, set())
        if seq > prefix[key] + 1 and seq not in seen:
            bad.append((key, prefix[key], seq))
        seen.add(seq)
        while prefix[key] + 1 in seen:
            prefix[key] += 1
    return bad


@dataclass
class Verdict:
    """What a chaos run did to the records; :meth:`check` asserts the contract."""

    name: str
    produced: int
    lost: list[str]
    violations: list[tuple[str, int, int]]
    duplicates: int
    unknown: list[str]
    extra: dict[str, object] = field(default_factory=dict)

    def _record(self, max_duplicates: int, ordered: bool) -> None:
        path = os.environ.get("EVENTRUN_RELIABILITY_LOG")
        if not path:
            return
        line = {
            "name": self.name,
            "produced": self.produced,
            "lost": len(self.lost),
            "order_violations": len(self.violations) if ordered else None,
            "duplicates": self.duplicates,
            "duplicate_bound": max_duplicates,
            **{k: v for k, v in self.extra.items() if isinstance(v, int | float | str)},
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def summary(self) -> str:
        figures = {
            "produced": self.produced,
            "lost": len(self.lost),
            "order_violations": len(self.violations),
            "duplicates": self.duplicates,
            **self.extra,
        }
        return f"chaos[{self.name}]: " + ", ".join(f"{k}={v}" for k, v in figures.items())

    def check(self, *, max_duplicates: int, ordered: bool = True) -> None:
        """Print the figures; assert nothing lost, at most ``max_duplicates`` records
        handled twice (see :func:`duplicate_bound`) and (``ordered``) no order violation.
        With ``$EVENTRUN_RELIABILITY_LOG`` set, also append them as a JSON line there, the
        input of scripts/reliability_table.py (docs/reliability.md)."""
        print(self.summary())
        self._record(max_duplicates, ordered)
        assert not self.unknown, f"ledger has records never produced: {self.unknown[:5]}"
        assert not self.lost, f"{len(self.lost)} records lost, e.g. {self.lost[:5]}"
        if ordered:
            assert not self.violations, f"order violations: {self.violations[:5]}"
        assert self.duplicates <= max_duplicates, (
            f"{self.duplicates} duplicates, more than the {max_duplicates} in flight"
        )


def started_since(path: Path, offset: int) -> tuple[list[dict[str, str]], int]:
    """The ``$STARTED`` lines from byte ``offset`` on (complete lines), and the new offset."""
    if not path.exists():
        return [], offset
    data = path.read_bytes()[offset:]
    data = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in data.splitlines()], offset + len(data)


def in_flight(started: list[dict[str, str]], unacked: Callable[[str], bool]) -> int:
    """Distinct records started in one daemon's life whose ack had not reached the broker
    when it was killed (``unacked(pos)``, asked of the broker after the kill)."""
    return len({line["id"] for line in started if unacked(line["pos"])})


def duplicate_bound(
    *, disruptions: int, batch_size: int, shards: int, parallelization_factor: int, concurrency: int
) -> int:
    """The most records a run may handle twice (the module docstring derives it)."""
    parallel_batches = min(concurrency, shards * parallelization_factor)
    return disruptions * batch_size * parallel_batches * 2


def verdict(name: str, produced: list[dict[str, str]], ledger: Path, **extra: object) -> Verdict:
    lines = read_ledger(ledger)
    counts = Counter(line["id"] for line in lines)
    ids = {doc["id"] for doc in produced}
    return Verdict(
        name=name,
        produced=len(produced),
        lost=sorted(ids - counts.keys()),
        violations=order_violations(lines),
        duplicates=sum(counts.values()) - len(counts),
        unknown=sorted(counts.keys() - ids),
        extra=dict(extra),
    )


def app_yaml(
    *,
    connections: str,
    trigger: str,
    environment: dict[str, str],
    concurrency: int = 2,
    timeout: str = "30s",
    memory_mb: int = 256,
    shutdown_grace: str = "5s",
) -> str:
    """An app with one function ``fn`` (``chaos_app:handler``) and one trigger (a YAML
    flow mapping such as ``{redis_streams: {...}}``)."""
    return f"""
connections: {connections}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: {shutdown_grace}
functions:
  fn:
    handler: chaos_app:handler
    concurrency: {concurrency}
    min_warm: 1
    timeout: {timeout}
    memory_mb: {memory_mb}
    environment: {json.dumps(environment)}
    triggers:
      - {trigger}
"""
