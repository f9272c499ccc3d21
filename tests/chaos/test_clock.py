"""A real daemon's wall clock stepped an hour forward and an hour back under a running cron
trigger, with libfaketime (``LD_PRELOAD``; the offset is a file the test rewrites, read on
every clock call): no storm of catch-up fires beyond ``catch_up``, no tick fired twice, the
ticks of the real time before and after never lost, and the monotonic clock (the daemon's
timers) left alone.

tests/sources/cron/test_cron.py covers the same rules in-process on a fake clock; this is
the process-level run, through the store, the dispatcher and the workers.
"""

from __future__ import annotations

import glob
import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from eventrun.sources.cron._source import MAX_SLEEP_S
from tests._daemon import Daemon
from tests._runtime_kit import write_app
from tests.chaos._kit import wait
from tests.chaos._ledger import Verdict

CATCH_UP = 2

HANDLER = """
import json, os

def tick(event, context):
    line = json.dumps({"time": event["time"]}) + "\\n"
    fd = os.open(os.environ["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail(
            "libfaketime is not installed (the clock-jump test preloads it): run "
            "`make system-deps` or `sudo apt-get install libfaketime`"
        )
    return found[0]


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _fired(daemon: Daemon) -> list[int]:
    return [_epoch(e["scheduled_at"]) for e in daemon.events("cron.fired")]


def _handled(ledger: Path) -> list[int]:
    if not ledger.exists():
        return []
    text = ledger.read_text()
    return [_epoch(json.loads(line)["time"]) for line in text[: text.rfind("\n") + 1].splitlines()]


def _contiguous_gaps(ticks: list[int]) -> list[int]:
    """Seconds missing between the first and the last of ``ticks`` (rate(1 second))."""
    if not ticks:
        return []
    have = set(ticks)
    return [t for t in range(min(ticks), max(ticks) + 1) if t not in have]


def test_wall_clock_an_hour_forward_then_back_under_cron(tmp_path: Path) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    ledger = tmp_path / "ticks.jsonl"
    config = write_app(
        tmp_path,
        f"""
        store: {{url: "sqlite:///state.db"}}
        functions:
          tick:
            handler: clock_app:tick
            concurrency: 4
            min_warm: 1
            timeout: 10s
            environment: {{LEDGER: "{ledger}"}}
            triggers:
              - cron: {{schedule: "rate(1 second)", catch_up: {CATCH_UP}}}
        """,
        {"clock_app.py": HANDLER},
    )
    env = {
        "LD_PRELOAD": _libfaketime(),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",  # read the offset file on every call
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # only the wall clock jumps
    }
    daemon = Daemon(config, env=env).start()
    try:
        daemon.wait_for(lambda e: e.get("event") == "cron.fired", 30)
        daemon.wait_for(lambda e: len(_fired(daemon)) >= 3, 30)

        # an hour forward: the skipped 3600 ticks are missed ticks, the latest CATCH_UP fire
        jumped = time.time()  # this process's clock is the real one
        offset.write_text("+3600\n")
        daemon.wait_for(lambda e: e.get("event") == "cron.ticks_dropped", 30)
        daemon.wait_for(lambda e: sum(t > jumped + 3602 for t in _fired(daemon)) >= 3, 30)
        # ticks of the skipped hour (due after the jump's moment, up to the new time): only
        # the catch-up ones fire
        caught_up = [t for t in _fired(daemon) if jumped < t <= jumped + 3600]
        assert len(caught_up) <= CATCH_UP, f"more than catch_up fires: {caught_up}"

        # an hour back: every tick up to the cursor fired already; none fires again
        offset.write_text("+0\n")
        moved = daemon.wait_for(lambda e: e.get("event") == "cron.clock_moved_back", 30)
        assert moved["by_s"] > 3000
        settled = len(_fired(daemon))
        # an observation window, not a synchronisation (no event says "nothing fired"):
        # longer than the cron source's longest sleep, so it re-read the clock meanwhile
        time.sleep(MAX_SLEEP_S + 1)
        after_back = _fired(daemon)[settled:]
        # (a tick already claimed when the clock moved may still go out)
        assert len(after_back) <= 1, f"ticks fired after the clock went back: {after_back}"

        # forward again (the real hour passed): ticks resume after the last one, once each
        offset.write_text("+3600\n")
        last = max(_fired(daemon))
        daemon.wait_for(lambda e: sum(t > last for t in _fired(daemon)) >= 3, 30)
        snapshot = set(_fired(daemon))
        wait(lambda: set(_handled(ledger)) >= snapshot, 30, "the fired ticks handled")
    finally:
        assert daemon.terminate(30) == 0
    fired = _fired(daemon)
    handled = _handled(ledger)
    twice = [t for t, n in Counter(fired).items() if n > 1]
    assert twice == [], f"ticks fired twice: {twice}"
    again = [t for t, n in Counter(handled).items() if n > 1]
    assert again == [], f"ticks handled twice: {again}"
    assert set(handled) <= set(fired), "only fired ticks were handled"
    real = [t for t in fired if t <= jumped]
    assert _contiguous_gaps(real) == [], "a tick of the real time before the jump was lost"
    resumed = [t for t in fired if t > last]
    assert _contiguous_gaps(resumed) == [], "a tick after the jumps was lost"
    result: dict[str, Any] = {"catch_up_fired": len(caught_up), "catch_up": CATCH_UP}
    Verdict(
        name="wall clock +1h then -1h (libfaketime) / cron",
        produced=len(fired),
        lost=[str(t) for t in _contiguous_gaps(real) + _contiguous_gaps(resumed)],
        violations=[],
        duplicates=len(handled) - len(set(handled)),
        unknown=[],
        extra=result,
    ).check(max_duplicates=0, ordered=False)
