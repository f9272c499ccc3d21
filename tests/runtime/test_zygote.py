"""The daemon's zygote: started by the phased start, shared by every ``runtime: process``
function, gone with the daemon, whether it drains (SIGTERM) or is killed."""

from __future__ import annotations

import os
import select
import signal
import textwrap
from pathlib import Path

import httpx
import pytest

from tests._daemon import Daemon, daemon

CONFIG = """
functions:
  one:
    handler: app.handler
    min_warm: 1
    triggers:
      - http: {path: /one, methods: [GET], auth: none}
  two:
    handler: app.handler
    environment: {ONLY_TWO: "2"}
    triggers:
      - http: {path: /two, methods: [GET], auth: none}
  inline:
    handler: app.handler
    runtime: inline
    triggers:
      - http: {path: /inline, methods: [GET], auth: none}
"""

APP = """
import json, os

def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "two": os.environ.get("ONLY_TWO")})}
"""


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(") ", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    path = tmp_path / "eventrun.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def _get(d: Daemon, path: str) -> dict[str, object]:
    response = httpx.get(f"{d.url}{path}", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_one_zygote_forks_every_process_functions_workers_and_drains_with_the_daemon(
    config: Path,
) -> None:
    with daemon(config) as d:
        (started,) = d.events("zygote.started")
        zygote = started["pid"]
        assert isinstance(zygote, int)
        assert d.proc is not None
        assert _ppid(zygote) == d.proc.pid
        one, two = _get(d, "/one"), _get(d, "/two")  # two: never invoked before
        assert one["ppid"] == two["ppid"] == zygote
        assert one["two"] is None
        assert two["two"] == "2"
        assert _get(d, "/inline")["pid"] == d.proc.pid
        assert not d.events("zygote.own")
        status = httpx.get(f"{d.url}/status", timeout=10).json()["zygote"]
        assert status["pid"] == zygote
        assert status["restarts"] == 0
        assert status["workers"] == 2  # one, two; the inline function has none
        assert d.terminate() == 0
    assert _gone(zygote)
    assert not d.events("zygote.died")


def test_the_zygote_dies_with_a_killed_daemon(config: Path) -> None:
    with daemon(config) as d:
        zygote = d.events("zygote.started")[0]["pid"]
        assert isinstance(zygote, int)
        worker = _get(d, "/one")["pid"]
        assert isinstance(worker, int)
        pidfds = [os.pidfd_open(pid) for pid in (zygote, worker)]
        try:
            d.kill()
            # the parent-death signal: a pidfd becomes readable once its process exited
            readable, _, _ = select.select(pidfds, [], [], 10)
            while len(readable) < len(pidfds):
                more, _, _ = select.select(pidfds, [], [], 10)
                assert more, "a process outlived the daemon"
                readable = list({*readable, *more})
        finally:
            for fd in pidfds:
                os.close(fd)


def test_a_killed_zygote_is_restarted_and_new_functions_fork_from_the_new_one(
    config: Path,
) -> None:
    with daemon(config) as d:
        old = d.events("zygote.started")[0]["pid"]
        assert isinstance(old, int)
        os.kill(old, signal.SIGKILL)
        restarted = d.wait_for(lambda e: e.get("event") == "zygote.restarted")
        (died,) = d.events("zygote.died")
        assert died["returncode"] == -signal.SIGKILL
        new = restarted["pid"]
        assert new != old
        assert _get(d, "/two")["ppid"] == new  # never invoked before the kill
        assert _get(d, "/one")["ppid"] == new  # its min_warm worker died with the old one
        assert httpx.get(f"{d.url}/status", timeout=10).json()["zygote"]["restarts"] == 1
