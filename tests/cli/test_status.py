"""``eventrun status``: the ``--json`` document of a running runtime, the daemon address taken
from the config, and the rich table rendered from two snapshots (rates)."""

from __future__ import annotations

import codecs
import copy
import fcntl
import http.server
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from eventrun.cli import main
from eventrun.cli._status import daemon_url, render
from tests._daemon import daemon
from tests._runtime_kit import running_app, write_app

HANDLERS = """
def work(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail: " + str(event["fail"]))
    return {"ok": True}
"""

CONFIG = """
store: {url: "sqlite:///state.db"}
functions:
  work:
    handler: handlers:work
    concurrency: 3
    maximum_retry_attempts: 0
  idle:
    handler: handlers:work
    runtime: inline
"""
INVOKE = "/2015-03-31/functions/{}/invocations"


def status_json(url: str, token: str) -> Result:
    env = {"EVENTRUN_TOKEN": token}
    return CliRunner().invoke(main, ["status", "--json", "--url", url], env=env)


async def test_status_json_reports_what_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    token = "status-token-0123456"
    monkeypatch.setenv("EVENTRUN_TOKENS", token)
    async with running_app(config) as rt:
        url = f"http://127.0.0.1:{rt.bound_port}"
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=auth) as http:
            for n in range(2):
                assert (await http.post(INVOKE.format("work"), json={"n": n})).status_code == 200
            r = await http.post(INVOKE.format("work"), json={"fail": "sync"})
            assert r.headers["X-Amz-Function-Error"] == "Unhandled"
            event = {"X-Amz-Invocation-Type": "Event"}
            r = await http.post(INVOKE.format("work"), json={"fail": "async"}, headers=event)
            assert r.status_code == 202
        with anyio.fail_after(30):  # the failure record is written, then the entry acked
            while (  # noqa: ASYNC110 - store state has no event
                await rt.store.depth("async:work") or not await rt.store.depth("local:work-dlq")
            ):
                await anyio.sleep(0.02)
        await rt.depths.refresh(rt.store, time.time())
        result = await anyio.to_thread.run_sync(status_json, url, token)
        denied = await anyio.to_thread.run_sync(status_json, url, "wrong")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ready"] is True
    assert set(doc["functions"]) == {"work", "idle"}
    work = doc["functions"]["work"]
    assert work["invocations"] == {"ok": 2, "error": 2, "throttled": 0}
    assert work["in_flight"] == 0
    assert work["concurrency"] == 3
    assert work["workers"]["invocations"] == 4
    assert work["workers"]["busy"] == 0
    assert work["async"]["failed"] == 1
    assert work["async_queue_depth"] == 0
    messages = [e["error"]["errorMessage"] for e in work["recent_errors"]]
    assert messages == ["asked to fail: sync", "asked to fail: async"]
    assert doc["functions"]["idle"]["invocations"] == {"ok": 0, "error": 0, "throttled": 0}
    assert doc["dlq"] == {"local:work-dlq": 1, "local:idle-dlq": 0}
    assert doc["queues_refreshed_at"] > 0
    assert denied.exit_code == 1
    assert "401" in denied.output


def test_daemon_url_comes_from_the_config(tmp_path: Path) -> None:
    config = write_app(tmp_path, "server: {host: 0.0.0.0, port: 9123}\nfunctions: {}\n")
    assert daemon_url(None, str(config)) == "http://127.0.0.1:9123"
    assert daemon_url("http://h:1", str(config)) == "http://h:1"
    assert daemon_url(None, str(tmp_path / "missing.yaml")) == "http://127.0.0.1:9000"


def _snapshot() -> dict[str, Any]:
    return {
        "ready": True,
        "uptime_s": 42.0,
        "functions": {
            "orders": {
                "workers": {"workers": 3, "busy": 2, "idle": 1},
                "invocations": {"ok": 100, "error": 4, "throttled": 1},
                "in_flight": 2,
                "async_queue_depth": 7,
            }
        },
        "sources": {
            "orders/kafka[0]": {
                "kind": "kafka",
                "function": "orders",
                "started": True,
                "error": None,
                "dispatch": {"succeeded": 500.0, "failed_to_destination": 3.0},
                "lag": {"total": 1234.0, "oldest_age_s": 8.5, "shards": {}},
            }
        },
        "dlq": {"local:orders-dlq": 3, "local:other-dlq": 0},
    }


def test_table_shows_rates_from_two_snapshots() -> None:
    before = _snapshot()
    now = copy.deepcopy(before)
    now["functions"]["orders"]["invocations"] = {"ok": 130, "error": 6, "throttled": 1}
    now["sources"]["orders/kafka[0]"]["dispatch"]["succeeded"] = 700.0
    console = Console(record=True, width=200, color_system=None)
    console.print(render(now, before, 2.0))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "orders  " in line and "│" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    # function, warm/busy, in flight, invocations/s, errors/s, errors, throttled, queued
    assert cells == ["orders", "1/2", "2", "16.0", "1.0", "6", "1", "7"]
    trigger = next(line for line in text.splitlines() if "orders/kafka[0]" in line)
    cells = [c.strip() for c in trigger.split("│") if c.strip()]
    assert cells == ["orders/kafka[0]", "kafka", "orders", "running", "100.0", "1234", "8.5", "3"]
    assert "local:orders-dlq" in text
    first = Console(record=True, width=200, color_system=None)
    first.print(render(before))  # no previous snapshot: no rates yet
    assert "16.0" not in first.export_text()


def test_daemon_url_brackets_an_ipv6_host(tmp_path: Path) -> None:
    config = write_app(tmp_path, "server: {host: '::1', port: 9124}\nfunctions: {}\n")
    assert daemon_url(None, str(config)) == "http://[::1]:9124"
    wildcard = write_app(tmp_path / "w", "server: {host: '::', port: 9125}\nfunctions: {}\n")
    assert daemon_url(None, str(wildcard)) == "http://127.0.0.1:9125"


def test_table_shows_a_trigger_error_and_no_rate_without_a_previous_count() -> None:
    before = _snapshot()
    del before["sources"]["orders/kafka[0]"]["dispatch"]  # not dispatched anything yet
    now = _snapshot()
    now["sources"]["orders/kafka[0]"]["error"] = "KafkaError: broker 127.0.0.1:1 refused " * 3
    console = Console(record=True, width=200, color_system=None)
    console.print(render(now, before, 2.0))
    trigger = next(line for line in console.export_text().splitlines() if "kafka[0]" in line)
    cells = [c.strip() for c in trigger.split("│") if c.strip()]
    # the state is the error cut to 40 characters; Records/s has nothing to compare with
    assert cells == [
        "orders/kafka[0]",
        "kafka",
        "orders",
        "KafkaError: broker 127.0.0.1:1 refused K",
        "-",
        "1234",
        "8.5",
        "3",
    ]


class _ListStatus(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[1, 2]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_status_of_a_server_that_is_not_eventrun_is_an_error() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ListStatus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(main, ["status", "--url", url])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert result.exit_code == 1
    assert f"error: {url}/status did not answer a JSON object" in result.output


LIVE_CONFIG = """
functions:
  work:
    handler: handlers:work
    runtime: inline
    maximum_retry_attempts: 0
"""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r")


class _Terminal:
    """``eventrun status`` on the slave side of a pseudo-terminal; its screen output is read
    from the master side on a thread (escape sequences removed)."""

    def __init__(self, url: str, interval: float) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
        env.pop("NO_COLOR", None)
        cmd = [sys.executable, "-m", "eventrun", "status", "--url", url]
        self.proc = subprocess.Popen(
            [*cmd, "--interval", str(interval)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self._master = master
        self._text = ""
        # a chunk may end inside a multi-byte character (the table's box drawing)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the slave side closed (the process exited)
                chunk = b""
            with self._cond:
                if not chunk:
                    self._cond.notify_all()
                    return
                self._text += _ANSI.sub("", self._decoder.decode(chunk))
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return self._text

    def wait_for(self, predicate: Callable[[str], bool], timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self._text):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; the terminal shows:\n{self._text[-3000:]}"
                assert self.proc.poll() is None, f"status exited:\n{self._text[-3000:]}"
                self._cond.wait(min(left, 0.5))
            return self._text

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        os.close(self._master)


def _work_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("│ work ")]
    return [[c.strip() for c in row.split("│") if c.strip()] for row in rows]


def test_live_view_redraws_until_ctrl_c_and_retries_while_the_daemon_is_gone(
    tmp_path: Path,
) -> None:
    config = write_app(tmp_path, LIVE_CONFIG, {"handlers.py": HANDLERS})
    interval = 0.2
    with daemon(config) as d:
        term = _Terminal(d.url, interval)
        try:
            # the first table: the function, no invocations yet, no rates yet
            # a frame arrives in several reads: wait for its last section too
            term.wait_for(
                lambda t: any(r[5:6] == ["0"] for r in _work_rows(t)) and "local:work-dlq" in t
            )
            assert _work_rows(term.text())[0][:6] == ["work", "1/0", "0", "-", "-", "0"]
            assert "Dead-letter queues" in term.text()
            assert "local:work-dlq" in term.text()
            with httpx.Client(base_url=d.url) as http:
                for fail in (False, True, True):
                    http.post(INVOKE.format("work"), json={"fail": fail})
            # a later fetch shows the two errors: the view redraws from new snapshots
            term.wait_for(lambda t: any(r[5:6] == ["2"] for r in _work_rows(t)))
            row = next(r for r in _work_rows(term.text()) if r[5:6] == ["2"])
            assert row[1:3] == ["1/0", "0"]
            assert re.fullmatch(r"\d+\.\d", row[3])  # rates from two snapshots now
            assert re.fullmatch(r"\d+\.\d", row[4])
            d.stop()
            term.wait_for(lambda t: "(retrying)" in t)
            assert f"cannot reach the daemon at {d.url}" in term.text()
            term.proc.send_signal(signal.SIGINT)  # Ctrl-C quits quietly
            assert term.proc.wait(30) == 0
            assert "Traceback" not in term.text()
        finally:
            term.close()
