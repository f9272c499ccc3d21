"""The quickstart app end to end: ``eventrun run`` as a real subprocess on a copy of
examples/quickstart — its function URL, the Invoke API, files dropped in ``inbox``
(summaries in ``outbox``, a failing file's record in the ``local:uploads-failed`` DLQ),
then SIGTERM and a clean exit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from eventrun.store import QueueEntry
from eventrun.store._open import open_store
from tests._daemon import Daemon

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
TOKEN = "quickstart-token"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "quickstart"
    shutil.copytree(
        EXAMPLE, root, ignore=shutil.ignore_patterns(".eventrun", "outbox", "__pycache__")
    )
    for leftover in (root / "inbox").iterdir():
        if leftover.name != ".gitkeep":
            leftover.unlink()
    return root


def invoked(daemon: Daemon, function: str, outcome: str, after: int) -> dict[str, Any]:
    """Wait for the ``after``-th+1 ``invoke.done`` log line of ``function``."""
    seen = []

    def match(entry: dict[str, Any]) -> bool:
        if entry.get("event") == "invoke.done" and entry.get("function") == function:
            seen.append(entry)
            return len(seen) > after and entry.get("outcome") == outcome
        return False

    return daemon.wait_for(match, timeout_s=60)


async def dlq_entries(root: Path, queue: str) -> list[QueueEntry]:
    async with open_store("sqlite:///.eventrun/state.db", config_dir=root) as store:
        return await store.peek(queue)


def test_quickstart_end_to_end(app_dir: Path) -> None:
    daemon = Daemon(app_dir / "eventrun.yaml", env={"EVENTRUN_TOKENS": TOKEN})
    try:
        daemon.start()
        with httpx.Client(base_url=daemon.url, timeout=30) as http:
            # the function URL (auth: none)
            r = http.get("/hello", params={"name": "you"})
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            hello = r.json()
            assert hello["message"] == "hello, you"
            assert hello["request_id"] == r.headers["x-amzn-RequestId"]
            assert isinstance(hello["worker_pid"], int)

            # the Invoke API needs the token
            event = {"queryStringParameters": {"name": "api"}}
            invoke = "/2015-03-31/functions/hello/invocations"
            assert http.post(invoke, json=event).status_code == 401
            r = http.post(invoke, json=event, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
            assert r.headers["X-Amz-Executed-Version"] == "$LATEST"
            result = r.json()
            assert result["statusCode"] == 200
            assert json.loads(result["body"])["message"] == "hello, api"

        # a file dropped in inbox -> outbox/NAME.json with its counts
        text = "alpha beta gamma\ndelta epsilon\n"
        (app_dir / "inbox" / "notes.txt").write_text(text)
        invoked(daemon, "uploads", "ok", after=0)
        summary = json.loads((app_dir / "outbox" / "notes.txt.json").read_text())
        assert summary == {"key": "notes.txt", "size": len(text), "lines": 2, "words": 5}

        # a file starting with FAIL -> the handler raises -> the DLQ (no retries configured)
        (app_dir / "inbox" / "FAIL-report.csv").write_text("FAIL\nplease\n")
        daemon.wait_for(
            lambda e: e.get("event") == "async.failed" and e.get("function") == "uploads",
            timeout_s=60,
        )
        assert not (app_dir / "outbox" / "FAIL-report.csv.json").exists()
        assert daemon.terminate() == 0
    finally:
        daemon.stop()

    assert daemon.events("shutdown.complete")
    entries = anyio.run(dlq_entries, app_dir, "local:uploads-failed")
    assert len(entries) == 1
    record = json.loads(entries[0].payload)
    context = record["requestContext"]
    assert context["condition"] == "RetriesExhausted"
    assert context["functionArn"].endswith(":function:uploads:$LATEST")
    assert context["approximateInvokeCount"] == 1
    [s3_record] = record["requestPayload"]["Records"]
    assert s3_record["eventName"].startswith("ObjectCreated:")
    assert s3_record["s3"]["bucket"]["name"] == "inbox"
    assert s3_record["s3"]["object"]["key"] == "FAIL-report.csv"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert "asks to fail" in record["responsePayload"]["errorMessage"]
