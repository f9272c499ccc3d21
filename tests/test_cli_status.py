"""``eventrun status``: the ``--json`` document of a running runtime, the daemon address taken
from the config, and the rich table rendered from two snapshots (rates)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from eventrun._cli_status import daemon_url, render
from eventrun.cli import main
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
