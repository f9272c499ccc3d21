"""Helpers for chaos runs against the ``eventrun run`` daemon: bounded waits on the ledger
and the brokers' own state, and the kill-and-restart cycle."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from tests._daemon import Daemon
from tests._runtime_kit import write_app
from tests.chaos._ledger import HANDLER_SOURCE, read_ledger


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


def unique(ledger: Path) -> int:
    """Distinct records in the ledger."""
    return len({line["id"] for line in read_ledger(ledger)})


def write_chaos_app(root: Path, yaml_text: str) -> Path:
    return write_app(root, yaml_text, {"chaos_app.py": HANDLER_SOURCE})


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
) -> int:
    """Start the daemon, SIGKILL it ``kills`` times at random points of the run (after a
    random number of newly handled records), restarting it each time; return the number
    of kills survived. The last daemon is left running until the ledger holds every
    record and ``settled()`` (if given) is true, then stopped with SIGTERM (exit status
    must be 0). ``settled`` is for sources whose redeliveries come back after a delay:
    a message a killed daemon handled but never deleted reappears only when its
    visibility timeout runs out, possibly after every record is in the ledger, and the
    last daemon must still be there to take it."""
    survived = 0
    daemon = Daemon(config, env=env).start()
    try:
        for round_ in range(kills):
            done = unique(ledger)
            target = done + rng.randint(1, max(1, (total - done) // (kills + 1 - round_)))
            wait(lambda t=target: unique(ledger) >= t, timeout_s, f"{target} records handled")
            daemon.kill()
            assert unique(ledger) < total, "the run finished before the kill"
            survived += 1
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
    return survived
