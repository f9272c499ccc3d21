"""The ``eventrun`` command line: check, schema, invoke (standalone and against a running
daemon), generate-event, and start-up errors of ``run``.

One-shot commands run in-process with click's CliRunner; commands that talk to a daemon
or start one run as real subprocesses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jsonschema
import pytest
import redis
import structlog
from click.testing import CliRunner, Result

from eventrun.cli import main
from tests._daemon import Daemon
from tests._runtime_kit import running_app, write_app
from tests.chaos._kit import wait

APP_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
  boom:
    handler: app/fns.boom
  sidefx:
    handler: fns:sidefx
"""

FNS = """
import json
import os
from pathlib import Path


def echo(event, context):
    print("echo ran", context.aws_request_id)
    return {"got": event, "function": context.function_name}


def boom(event, context):
    raise KeyError("missing-thing")


def sidefx(event, context):
    Path(event["path"]).write_text(context.aws_request_id)
"""


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """The one-shot commands configure structlog; give the rest of the session its own."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path, APP_YAML, {"fns.py": FNS, "app/fns.py": FNS})


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# -- check ------------------------------------------------------------------------------


def test_check_ok(app: Path) -> None:
    result = cli("check", "-c", str(app))
    assert result.exit_code == 0, result.output
    assert "ok  function echo: fns:echo" in result.stdout
    assert "ok  function boom: app/fns.boom" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "eventrun.yaml: valid (3 functions)"


def test_check_lists_triggers(tmp_path: Path) -> None:
    yaml = APP_YAML + "    triggers: [{http: {path: /s}}, {cron: {schedule: 'rate(5 minutes)'}}]\n"
    config = write_app(tmp_path, yaml, {"fns.py": FNS, "app/fns.py": FNS})
    result = cli("check", "-c", str(config))
    assert result.exit_code == 0, result.output
    assert "ok  trigger sidefx/http[0]" in result.stdout
    assert "ok  trigger sidefx/cron[1]" in result.stdout


def test_check_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    yaml = APP_YAML.replace("    handler: fns:echo\n", "    handler: fns:echo\n    timeout: 0\n")
    config = write_app(tmp_path, yaml, {"fns.py": FNS, "app/fns.py": FNS})
    result = cli("check", "-c", str(config))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert line == "error: eventrun.yaml: functions.echo.timeout: must be 1s..15m, got 0"


def test_check_invalid_yaml_exits_2(tmp_path: Path) -> None:
    config = write_app(tmp_path, "functions: {echo: [\n")
    result = cli("check", "-c", str(config))
    assert result.exit_code == 2
    assert "invalid YAML" in one_error_line(result)


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml" in one_error_line(result)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("nomod:handler", "Runtime.ImportModuleError"),
        ("fns:nothing_here", "Runtime.HandlerNotFound"),
        ("broken:handler", "Runtime.UserCodeSyntaxError"),
    ],
)
def test_check_handler_that_cannot_be_imported_exits_2(
    tmp_path: Path, handler: str, expected: str
) -> None:
    yaml = f"functions:\n  f:\n    handler: {handler}\n"
    config = write_app(tmp_path, yaml, {"fns.py": FNS, "broken.py": "def handler(:\n"})
    result = cli("check", "-c", str(config))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert handler in line
    assert expected in line


# -- schema -----------------------------------------------------------------------------


def test_schema_is_a_json_schema_that_checks_configs() -> None:
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    good = {
        "server": {"host": "127.0.0.1", "port": 9000},
        "functions": {"f": {"handler": "app.f:handler", "triggers": [{"http": {"path": "/f"}}]}},
    }
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({**good, "unknown_key": 1}))  # extra keys are errors
    bad_trigger = {"functions": {"f": {"handler": "a:b", "triggers": [{"nope": {}}]}}}
    assert list(validator.iter_errors(bad_trigger))


# -- invoke, standalone -----------------------------------------------------------------


def test_invoke_standalone_prints_the_result(app: Path) -> None:
    result = cli("invoke", "echo", "--payload", '{"a": 1}', "-c", str(app))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"got": {"a": 1}, "function": "echo"}
    assert "echo ran" in result.stderr  # the handler's log goes to stderr
    assert "START RequestId:" in result.stderr


def test_invoke_standalone_payload_from_file(app: Path, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"from": "file"}))
    result = cli("invoke", "echo", "--payload", f"@{event}", "-c", str(app))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["got"] == {"from": "file"}


def test_invoke_standalone_default_payload_is_empty_object(app: Path) -> None:
    result = cli("invoke", "echo", "-c", str(app))
    assert json.loads(result.stdout)["got"] == {}


def test_invoke_standalone_error_prints_error_json_and_exits_1(app: Path) -> None:
    result = cli("invoke", "boom", "--payload", "{}", "-c", str(app))
    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "KeyError"
    assert error["errorMessage"] == "'missing-thing'"
    assert set(error) == {"errorMessage", "errorType", "stackTrace", "requestId"}


def test_invoke_standalone_unknown_function_exits_2(app: Path) -> None:
    result = cli("invoke", "nope", "-c", str(app))
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: no function 'nope' in eventrun.yaml (have: boom, echo, sidefx)"
    )


def test_invoke_bad_payload_exits_2(app: Path) -> None:
    result = cli("invoke", "echo", "--payload", "{not json", "-c", str(app))
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr


def test_invoke_async_without_url_exits_2(app: Path) -> None:
    result = cli("invoke", "echo", "--async", "-c", str(app))
    assert result.exit_code == 2
    assert "--url" in one_error_line(result)


# -- invoke --url against a running daemon ----------------------------------------------


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return await anyio.run_process([sys.executable, "-m", "eventrun", *args], check=False, env=env)


async def test_invoke_url_against_a_running_daemon(
    app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTRUN_TOKENS", raising=False)
    monkeypatch.delenv("EVENTRUN_TOKEN", raising=False)
    async with running_app(app) as runtime:
        url = f"http://127.0.0.1:{runtime.bound_port}"
        ok = await run_cli("invoke", "echo", "--payload", '{"b": 2}', "--url", url)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout) == {"got": {"b": 2}, "function": "echo"}

        failed = await run_cli("invoke", "boom", "--url", url)
        assert failed.returncode == 1
        assert json.loads(failed.stdout)["errorType"] == "KeyError"

        missing = await run_cli("invoke", "nope", "--url", url)
        assert missing.returncode == 1
        assert b"404" in missing.stderr
        assert b"ResourceNotFoundException" in missing.stderr or b"nope" in missing.stderr

        target = tmp_path / "async-ran.txt"
        queued = await run_cli(
            "invoke",
            "sidefx",
            "--async",
            "--payload",
            json.dumps({"path": str(target)}),
            "--url",
            url,
        )
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout) == {"StatusCode": 202}
        # the async invocation really runs: drain happens at shutdown at the latest
    assert len(target.read_text()) == 36  # the request id the handler wrote


async def test_invoke_url_sends_the_bearer_token(
    app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "cli-token-0001-aa,cli-token-0002-bb")
    async with running_app(app) as runtime:
        url = f"http://127.0.0.1:{runtime.bound_port}"
        ok = await run_cli("invoke", "echo", "--url", url)
        assert ok.returncode == 0, ok.stderr
        env = {k: v for k, v in os.environ.items() if k != "EVENTRUN_TOKENS"}
        denied = await run_cli("invoke", "echo", "--url", url, env={**env, "EVENTRUN_TOKEN": "x"})
        assert denied.returncode == 1
        assert b"401" in denied.stderr


async def test_invoke_url_unreachable_daemon_exits_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_cli("invoke", "echo", "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the daemon")


# -- run: start-up errors ---------------------------------------------------------------


async def test_run_refuses_a_non_loopback_bind_without_tokens(app: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTRUN_TOKENS"}
    app.write_text("server: {host: 0.0.0.0}\n" + app.read_text())
    result = await run_cli("run", "-c", str(app), "--port", "0", env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.decode().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "EVENTRUN_TOKENS" in lines[0]
    assert b"Traceback" not in result.stderr


async def test_run_on_a_port_in_use_exits_2(app: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await run_cli("run", "-c", str(app), "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


# -- run: Ctrl-C ------------------------------------------------------------------------

GATED = """
import base64, json, os, time
from pathlib import Path


def gated(event, context):
    \"\"\"Announce itself (GATE_DIR/started-PID), then wait for GATE_DIR/release.\"\"\"
    gate = Path(os.environ["GATE_DIR"])
    (gate / f"started-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not (gate / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    if "Records" in event:
        ids = [r["redis"]["fields"]["id"] for r in event["Records"]]
    else:
        ids = [event["id"]]
    with open(gate / "done", "a") as done:
        done.write("".join(f"{i}\\n" for i in ids))
    return {"done": ids}
"""

GATED_YAML = """
connections: {{redis: {{main: {{url: "{redis}"}}}}}}
store: {{url: "sqlite:///state.db"}}
shutdown_grace: {grace}s
functions:
  gated:
    handler: gated:gated
    concurrency: 2
    timeout: 120
    environment: {{GATE_DIR: "{gate}"}}
    triggers:
      - redis_streams: {{connection: main, streams: [jobs], group: g, batch_size: 1}}
"""

INVOKE_PATH = "/2015-03-31/functions/gated/invocations"
SIGINT_MARGIN_S = 10.0
"""Interpreter exit, worker reaping and store close on a loaded 2-core machine."""


def _gated_daemon(tmp_path: Path, redis_url: str, grace: float) -> tuple[Daemon, Path]:
    gate = tmp_path / "gate"
    gate.mkdir()
    config = write_app(
        tmp_path / "app",
        GATED_YAML.format(redis=redis_url, grace=grace, gate=gate),
        {"gated.py": GATED},
    )
    env = {k: v for k, v in os.environ.items() if k != "EVENTRUN_TOKENS"}
    return Daemon(config, env=env, new_session=True), gate


def _invoke_in_thread(url: str, payload: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    """A synchronous Invoke API call on a thread; its (status, body) lands in the list."""
    answer: list[Any] = []

    def call() -> None:
        try:
            r = httpx.post(f"{url}{INVOKE_PATH}", json=payload, timeout=60)
            answer.append((r.status_code, r.json()))
        except httpx.HTTPError as exc:
            answer.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, answer


@pytest.mark.redis
def test_ctrl_c_drains_in_flight_work_and_exits_0(tmp_path: Path, redis_url: str) -> None:
    """One Ctrl-C: the daemon stops taking work, lets the in-flight stream batch and
    Invoke API call finish (both handlers are held until after the signal), acknowledges
    and answers them, and exits 0 within ``shutdown_grace``."""
    grace = 20.0
    daemon, gate = _gated_daemon(tmp_path, redis_url, grace)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    daemon.start()
    try:
        s1 = client.xadd("jobs", {"id": "s1"})
        thread, answer = _invoke_in_thread(daemon.url, {"id": "h1"})
        wait(lambda: len(list(gate.glob("started-*"))) == 2, 30, "both invocations running")
        daemon.interrupt()
        daemon.wait_for(lambda e: e.get("event") == "shutdown.begin", 30)
        s2 = client.xadd("jobs", {"id": "s2"})  # after the signal: must not be handled
        (gate / "release").touch()
        began = time.monotonic()
        assert daemon.proc is not None
        status = daemon.proc.wait(grace + SIGINT_MARGIN_S)
        took = time.monotonic() - began
        thread.join(30)
        pending = {row["message_id"] for row in client.xpending_range("jobs", "g", "-", "+", 10)}
        [group] = client.xinfo_groups("jobs")
    finally:
        daemon.stop()
        client.close()
    assert status == 0, "\n".join(daemon.raw[-20:])
    assert took < grace, f"the drain took {took:.1f}s"
    assert sorted((gate / "done").read_text().split()) == ["h1", "s1"]
    assert answer == [(200, {"done": ["h1"]})]
    assert s1 not in pending, "the finished stream entry was not acknowledged"
    # A blocking read in flight at the signal may still return s2 (the drain gives it
    # back: pending, redelivered later); it is never handled nor acknowledged.
    unread = _entry_key(group["last-delivered-id"]) < _entry_key(s2)
    assert unread or s2 in pending, "s2 was acknowledged without being handled"
    assert daemon.events("shutdown.complete")


@pytest.mark.redis
def test_a_second_ctrl_c_exits_at_once_and_acknowledges_nothing_unfinished(
    tmp_path: Path, redis_url: str
) -> None:
    """A second Ctrl-C during the drain exits at once (status 1, the CLI's
    ``os._exit(1)``), long before ``shutdown_grace``; the unfinished stream entry stays
    pending for the next consumer and the worker running it does not outlive the
    daemon."""
    grace = 60.0
    daemon, gate = _gated_daemon(tmp_path, redis_url, grace)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    daemon.start()
    try:
        client.xadd("jobs", {"id": "s1"})
        wait(lambda: any(gate.glob("started-*")), 30, "the invocation running")
        (started,) = gate.glob("started-*")
        worker = int(started.name.removeprefix("started-"))
        daemon.interrupt()
        daemon.wait_for(lambda e: e.get("event") == "shutdown.begin", 30)
        began = time.monotonic()
        daemon.interrupt()
        assert daemon.proc is not None
        try:
            status: int | None = daemon.proc.wait(SIGINT_MARGIN_S)
        except subprocess.TimeoutExpired:
            status = None  # still draining: the second Ctrl-C was not honoured
        took = time.monotonic() - began
        assert status == 1, "\n".join(daemon.raw[-30:])
        wait(lambda: not _running(worker), 30, "the worker gone with the daemon")
        pending = client.xpending("jobs", "g")["pending"]
    finally:
        (gate / "release").touch()
        daemon.stop()
        client.close()
    assert took < SIGINT_MARGIN_S, f"the second Ctrl-C took {took:.1f}s"
    assert not (gate / "done").exists()
    assert pending == 1, "the unfinished entry was acknowledged"
    assert not daemon.events("shutdown.complete")


def _entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- generate-event ---------------------------------------------------------------------


def generated(kind: str) -> dict[str, Any]:
    result = cli("generate-event", kind)
    assert result.exit_code == 0, result.output
    event: dict[str, Any] = json.loads(result.stdout)
    return event


def test_generate_event_sqs() -> None:
    record = generated("sqs")["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].startswith("arn:aws:sqs:")
    assert {"messageId", "receiptHandle", "body", "attributes", "md5OfBody", "awsRegion"} <= set(
        record
    )
    assert all(isinstance(v, str) for v in record["attributes"].values())


def test_generate_event_kafka() -> None:
    event = generated("kafka")
    assert event["eventSource"] == "SelfManagedKafka"
    assert "eventSourceArn" not in event
    [(key, records)] = event["records"].items()
    record = records[0]
    assert key == f"{record['topic']}-{record['partition']}"
    assert record["timestampType"] in ("CREATE_TIME", "LOG_APPEND_TIME")
    assert isinstance(record["headers"], list)


def test_generate_event_s3() -> None:
    record = generated("s3")["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert {"bucket", "object", "s3SchemaVersion"} <= set(record["s3"])
    assert {"key", "size", "eTag", "sequencer"} <= set(record["s3"]["object"])


def test_generate_event_schedule() -> None:
    event = generated("schedule")
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["detail"] == {}
    assert event["resources"][0].startswith("arn:aws:events:")


def test_generate_event_http() -> None:
    event = generated("http")
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["isBase64Encoded"] is False


def test_generate_event_redis() -> None:
    record = generated("redis")["Records"][0]
    assert record["eventSource"] == "eventrun:redis-streams"
    assert record["redis"]["stream"] in record["eventSourceARN"]


def test_generate_event_unknown_kind_exits_2() -> None:
    result = cli("generate-event", "sns")
    assert result.exit_code == 2
