"""Runtime API functions in the whole runtime: the Invoke API and an SQS trigger (moto)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests._daemon import Daemon
from tests._runtime_kit import running_app, write_app
from tests.fixtures.moto import REGION, MotoServer
from tests.fixtures.node_ric import node_function

from .conftest import APPS

# The first test that needs aws-lambda-ric installs it (npm builds a native addon: about
# two minutes; `make test` does it beforehand with `make node-ric`); each test bounds its
# own waits.
pytestmark = pytest.mark.timeout(600)


def _ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


async def test_invoke_api_runs_a_bootstrap_and_a_node_function(tmp_path: Path) -> None:
    node = node_function(APPS / "node_fn", tmp_path / "functions")
    config = write_app(
        tmp_path,
        f"""
        functions:
          custom:
            runtime: provided.al2023
            code: {APPS / "custom_py"}
            timeout: 2s
          node:
            runtime: nodejs20.x
            handler: index.handler
            code: functions/{node.name}
        """,
    )
    async with running_app(config) as runtime:
        url = f"http://127.0.0.1:{runtime.bound_port}/2015-03-31/functions"
        async with httpx.AsyncClient(timeout=30) as http:
            ok = await http.post(f"{url}/custom/invocations", json={"echo": "hi"})
            failed = await http.post(f"{url}/node/invocations", json={"raise": "no"})
            node_ok = await http.post(f"{url}/node/invocations", json={"echo": 5})
            timed_out = await http.post(f"{url}/custom/invocations", json={"sleep": 10})
    assert ok.status_code == 200
    assert ok.json()["echo"] == "hi"
    assert "x-amz-function-error" not in ok.headers
    assert failed.status_code == 200  # function errors are 200 with the header
    assert failed.headers["x-amz-function-error"] == "Unhandled"
    assert failed.json()["errorType"] == "BadInput"
    assert failed.json()["errorMessage"] == "no"
    assert node_ok.json()["echo"] == 5
    assert timed_out.headers["x-amz-function-error"] == "Unhandled"
    assert timed_out.json()["errorType"] == "Sandbox.Timedout"


async def test_function_urls_serve_node_functions_streamed_ones_buffered(tmp_path: Path) -> None:
    node = node_function(APPS / "node_fn", tmp_path)
    fns = "\n".join(
        f"""
          {name}:
            runtime: nodejs20.x
            handler: index.{name}
            code: {node.name}
            triggers: [{{http: {{path: /{name}, methods: [GET, POST]}}}}]"""
        for name in ("http", "stream", "streamfail")
    )
    config = write_app(tmp_path, f"functions:{fns}\n")
    async with (
        running_app(config) as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30) as http,
    ):
        plain = await http.post("/http", content=b"{}")
        streamed = await http.get("/stream")
        failed = await http.get("/streamfail")
    assert plain.status_code == 201
    assert plain.headers["x-runtime"] == "node"
    assert plain.json() == {"path": "/http", "method": "POST"}
    assert streamed.status_code == 202
    assert streamed.headers["x-streamed"] == "yes"
    assert streamed.text == "hello world"
    assert failed.status_code == 502  # a function error behind a function URL


@pytest.mark.sqs
async def test_sqs_trigger_drives_a_node_function_with_partial_batch_failures(
    tmp_path: Path, moto: MotoServer
) -> None:
    node = node_function(APPS / "node_fn", tmp_path)
    dlq = moto.create_queue(prefix="dlq")
    queue = moto.create_queue(dlq=dlq, max_receive_count=2)
    good_ones = [f"good-{i}" for i in range(20)]
    bodies = [*good_ones[:3], "bad-1", *good_ones[3:13], "bad-2", *good_ones[13:]]
    client = moto.boto3_client()
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:][:10])]
        client.send_message_batch(QueueUrl=queue.url, Entries=entries)
    ledger = tmp_path / "ledger.jsonl"
    config = write_app(
        tmp_path,
        f"""
        connections:
          sqs:
            main:
              region: {REGION}
              endpoint_url: "{moto.endpoint_url}"
              aws_access_key_id: testing
              aws_secret_access_key: testing
        store: {{url: "sqlite:///state.db"}}
        functions:
          fn:
            runtime: nodejs20.x
            handler: index.sqs
            code: {node.name}
            concurrency: 2
            environment: {{LEDGER: "{ledger}"}}
            triggers:
              - sqs:
                  connection: main
                  queue_url: {queue.url}
                  batch_size: 10
                  report_batch_item_failures: true
        """,
    )

    moved: set[str] = set()

    def dlq_bodies() -> set[str]:
        """What reached the DLQ so far (a receive hides what it returns: accumulate)."""
        got = client.receive_message(QueueUrl=dlq.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        moved.update(m["Body"] for m in got.get("Messages", []))
        return moved

    async with running_app(config, serve_http=False) as runtime:
        with anyio.fail_after(30):
            await runtime.ready.wait()
        with anyio.fail_after(60):
            # polls the ledger: no event exists for "both bad records were tried twice"
            while Counter(x["body"] for x in _ledger(ledger) if not x["ok"]) != {  # noqa: ASYNC110
                "bad-1": 2,
                "bad-2": 2,
            }:
                await anyio.sleep(0.1)
        # moto moves a message at the receive after its maxReceiveCount-th: the runtime's
        # poller keeps receiving, so wait for the DLQ while it runs
        with anyio.fail_after(30):
            while dlq_bodies() != {"bad-1", "bad-2"}:  # noqa: ASYNC110
                await anyio.sleep(0.2)
    lines = _ledger(ledger)
    good = Counter(line["body"] for line in lines if line["ok"])
    assert good == dict.fromkeys(good_ones, 1)  # every good record once: deleted
    assert all(line["receives"] == 1 for line in lines if line["ok"])
    # the bad ones shared a batch with good ones (a real partial failure)
    bad_batches = {line["batch"] for line in lines if not line["ok"]}
    assert any(line["ok"] and line["batch"] in bad_batches for line in lines)
    assert moved == {"bad-1", "bad-2"}


def _gone(pid: int, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:  # another process's exit: no event to wait on
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1][0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_runtime_processes_end_with_the_daemon(tmp_path: Path, how: str) -> None:
    config = write_app(
        tmp_path,
        f"""
        functions:
          custom: {{runtime: provided, code: {APPS / "custom_py"}, min_warm: 1}}
        """,
    )
    daemon = Daemon(config).start()
    try:
        reply = httpx.post(
            f"{daemon.url}/2015-03-31/functions/custom/invocations", json={}, timeout=30
        )
        pid = reply.json()["pid"]
        assert not _gone(pid, within_s=0)
        if how == "sigterm":
            assert daemon.terminate() == 0
        else:
            daemon.kill()  # the parent-death signal takes the runtime process down
        assert _gone(pid), f"runtime process {pid} outlived the daemon ({how})"
    finally:
        daemon.stop()
