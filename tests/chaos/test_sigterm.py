"""SIGTERM under load: the daemon drains within ``shutdown_grace`` and exits 0; whatever
was not handled is still unacknowledged (pending or never delivered), and whatever was
handled within the grace period is acknowledged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from tests._daemon import Daemon
from tests.chaos._kit import unique, wait, write_chaos_app
from tests.chaos._ledger import app_yaml, duplicate_bound, handled_ids, plan, verdict

pytestmark = pytest.mark.redis

MARGIN_S = 5.0
"""Interpreter exit, worker reaping and store close on a loaded 2-core machine."""


def _entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


@pytest.mark.parametrize(("delay", "grace"), [("0.3", 3.0), ("8", 1.0)], ids=["drains", "cut"])
def test_sigterm_under_load(tmp_path: Path, redis_url: str, delay: str, grace: float) -> None:
    records = plan(400, keys=8)
    ledger = tmp_path / "ledger.jsonl"
    trigger = (
        "{redis_streams: {connection: main, streams: [load], group: g, consumer: c,"
        " batch_size: 5, parallelization_factor: 2, key_field: key}}"
    )
    config = write_chaos_app(
        tmp_path,
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": redis_url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "DELAY": delay},
            concurrency=2,
            shutdown_grace=f"{grace}s",
        ),
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    daemon = Daemon(config).start()
    try:
        with client.pipeline(transaction=False) as pipe:
            for doc in records:
                pipe.xadd("load", doc)  # type: ignore[arg-type]
            pipe.execute()
        wait(
            lambda: len(client.xpending_range("load", "g", "-", "+", 10)) > 0,
            30,
            "work in flight",
        )
        if float(delay) < grace:
            wait(lambda: unique(ledger) >= 20, 30, "20 records handled")
        began = time.monotonic()
        status = daemon.terminate(grace + MARGIN_S + 30)
        took = time.monotonic() - began
    finally:
        daemon.stop()
    assert status == 0, f"exit status {status}"
    assert took <= grace + MARGIN_S, f"shutdown took {took:.1f}s with a {grace}s grace"
    handled = handled_ids(ledger)
    entry_of = {fields["id"]: eid for eid, fields in client.xrange("load")}
    pending = {row["message_id"] for row in client.xpending_range("load", "g", "-", "+", 1000)}
    [group] = client.xinfo_groups("load")
    last = _entry_key(group["last-delivered-id"])
    client.close()
    acked_unhandled = [
        i
        for i, eid in entry_of.items()
        if i not in handled and _entry_key(eid) <= last and eid not in pending
    ]
    assert not acked_unhandled, f"acknowledged but never handled: {acked_unhandled[:5]}"
    handled_pending = [i for i in handled if entry_of[i] in pending]
    if float(delay) < grace:
        assert not handled_pending, f"handled in the grace period, not acked: {handled_pending}"
    # A fresh daemon (no handler delay) finishes the rest: nothing was lost.
    write_chaos_app(
        tmp_path,
        app_yaml(
            connections=json.dumps({"redis": {"main": {"url": redis_url}}}),
            trigger=trigger,
            environment={"LEDGER": str(ledger), "DELAY": "0"},
            shutdown_grace=f"{grace}s",
        ),
    )
    again = Daemon(config).start()
    try:
        wait(lambda: unique(ledger) >= len(records), 60, "the rest handled after a restart")
        assert again.terminate(30) == 0
    finally:
        again.stop()
    name = "drains" if float(delay) < grace else "cut"
    v = verdict(
        f"sigterm-{name}",
        records,
        ledger,
        handled_before_sigterm=len(handled),
        unacked_at_exit=len(entry_of) - len(handled),
        shutdown_s=round(took, 2),
        grace_s=grace,
    )
    # drains: every handled record was acknowledged in the grace period (asserted above)
    v.check(
        max_duplicates=duplicate_bound(
            disruptions=0 if float(delay) < grace else 1,
            batch_size=5,
            shards=1,
            parallelization_factor=2,
            concurrency=2,
        )
    )
    assert len(handled) < len(records), "the run finished before SIGTERM"
