"""Helpers for chaos runs against the ``eventrun run`` daemon: bounded waits on the ledger
and the brokers' own state, and the kill-and-restart cycle."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests._daemon import Daemon
from tests._runtime_kit import write_app
from tests.chaos._ledger import HANDLER_SOURCE, read_ledger, started_since

AckState = Callable[[list[dict[str, str]]], int]
"""Asked right after a kill with the ``$STARTED`` lines of the killed daemon's life: how
many of those records the broker holds unacknowledged (see
:func:`~tests.chaos._ledger.in_flight`)."""


def wait(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    """Poll ``check`` until true (no event exists for "the broker caught up")."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """The async :func:`wait`."""
    try:
        with anyio.fail_after(timeout_s):
            while True:
                if await check():
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its workers and their fork servers), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = [
                int(k) for k in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            ]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def gone(pid: int) -> bool:
    """The process exited (a zombie waiting for its reaper counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def unique(ledger: Path) -> int:
    """Distinct records in the ledger."""
    return len({line["id"] for line in read_ledger(ledger)})


def sqs_send(sqs: Any, queue_url: str, docs: list[dict[str, str]]) -> None:
    """Send ``docs`` as JSON message bodies, ten to a batch (SQS's most)."""
    for start in range(0, len(docs), 10):
        chunk = docs[start : start + 10]
        entries = [{"Id": doc["id"], "MessageBody": json.dumps(doc)} for doc in chunk]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def sqs_remaining(sqs: Any, queue_url: str) -> int:
    """Messages not deleted: waiting, in flight or delayed (moto's counts are exact)."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def write_chaos_app(root: Path, yaml_text: str) -> Path:
    return write_app(root, yaml_text, {"chaos_app.py": HANDLER_SOURCE})


@dataclass
class KillRun:
    survived: int = 0
    in_flight: list[int] = field(default_factory=list)
    """Per kill: records started in that daemon's life and unacknowledged at the kill."""


def kill_cycle(
    config: Path,
    ledger: Path,
    total: int,
    *,
    kills: int,
    rng: random.Random,
    env: dict[str, str] | None = None,
    timeout_s: float = 60,
    settled: Callable[[], bool] | None = None,
    started: Path | None = None,
    ack_state: AckState | None = None,
) -> KillRun:
    """Start the daemon, SIGKILL it ``kills`` times at random points of the run (after a
    random number of newly handled records), restarting it each time; return the kills
    survived (and the in-flight work at each, see below). The last daemon is left running
    until the ledger holds every record and ``settled()`` (if given) is true, then stopped
    with SIGTERM (exit status must be 0). ``settled`` is for sources whose redeliveries
    come back after a delay: a message a killed daemon handled but never deleted reappears
    only when its visibility timeout runs out, possibly after every record is in the
    ledger, and the last daemon must still be there to take it.

    With ``started`` (the handler's ``$STARTED`` log) and ``ack_state``, each kill's
    in-flight work is measured before the next daemon starts: the records started since
    the previous start whose acknowledgement the broker never got (see
    :func:`~tests.chaos._ledger.in_flight`)."""
    run = KillRun()
    offset = 0
    daemon = Daemon(config, env=env).start()
    try:
        for round_ in range(kills):
            done = unique(ledger)
            target = done + rng.randint(1, max(1, (total - done) // (kills + 1 - round_)))
            wait(lambda t=target: unique(ledger) >= t, timeout_s, f"{target} records handled")
            assert daemon.proc is not None
            workers = descendants(daemon.proc.pid)
            daemon.kill()
            # the workers die with the daemon (parent-death signal); once they are gone,
            # nothing of this daemon's life can still start or finish a record
            wait(lambda w=workers: all(gone(p) for p in w), 10, "the workers to die with it")
            assert unique(ledger) < total, "the run finished before the kill"
            run.survived += 1
            if started is not None and ack_state is not None:
                lines, offset = started_since(started, offset)
                run.in_flight.append(ack_state(lines))
            daemon = Daemon(config, env=env).start()
        wait(
            lambda: unique(ledger) >= total,
            timeout_s,
            "every record handled",
        )
        if settled is not None:
            wait(settled, timeout_s, "the source settled")
    finally:
        status = daemon.terminate(30) if daemon.proc and daemon.proc.poll() is None else None
    assert status == 0, f"graceful stop exited {status}"
    return run
