"""eventrun.workers._launch: the fork server dying under a running pool."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anyio
import structlog.testing

from .conftest import RunnerFactory, event


def _fork_servers() -> list[int]:
    """This process's children running the fork server."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"eventrun.workers._forkserver" in cmdline:
            found.append(int(entry.name))
    return found


async def test_a_killed_fork_server_is_logged_and_workers_are_spawned_instead(
    process_runner: RunnerFactory,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with process_runner(handler="basic.handler", max_requests=1) as runner:
            first = await runner.invoke(event({"n": 1}))
            assert first.ok, first.logs
            (server,) = _fork_servers()
            os.kill(server, signal.SIGKILL)
            with anyio.fail_after(10):
                while not [e for e in logs if e["event"] == "forkserver.died"]:  # noqa: ASYNC110 - no public event for it
                    await anyio.sleep(0.01)
            second = await runner.invoke(event({"n": 2}))
            assert _fork_servers() == []  # not restarted: the pool spawns workers itself
    assert second.ok, second.logs
    assert json.loads(second.payload)["event"] == {"n": 2}
    assert json.loads(second.payload)["pid"] != json.loads(first.payload)["pid"]
    (died,) = [e for e in logs if e["event"] == "forkserver.died"]
    assert died["function"] == "fn"
    assert died["log_level"] == "warning"
