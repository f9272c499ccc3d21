"""Reloading a real daemon: ``eventrun run --reload`` on file edits, and SIGHUP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from anyio.from_thread import start_blocking_portal

from tests._daemon import Daemon, daemon
from tests.fixtures.kafka import create_topic

HTTP_CONFIG = """
functions:
  hello:
    handler: app.handler
    min_warm: 1
    environment: {GREETING: "${GREETING_FROM_CONFIG:-hello}"}
    triggers:
      - http: {path: /hello, methods: [GET], auth: none}
"""

APP = """
import os
VERSION = {version!r}

def handler(event, context):
    return {{"statusCode": 200, "body": VERSION + " " + os.environ["GREETING"]}}
"""


def write(path: Path, text: str) -> None:
    """Replace a file's content in one step, as an editor's save does."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)


def get(d: Daemon) -> str:
    return httpx.get(f"{d.url}/hello", timeout=10).text


def nth_event(d: Daemon, name: str, n: int, timeout_s: float = 60) -> dict[str, object]:
    """Wait for the ``n``-th log event called ``name`` (1-based)."""
    d.wait_for(lambda _e: len(d.events(name)) >= n, timeout_s)
    return d.events(name)[n - 1]


@pytest.fixture
def http_app(tmp_path: Path) -> Path:
    write(tmp_path / "app.py", APP.format(version="v1"))
    config = tmp_path / "eventrun.yaml"
    write(config, HTTP_CONFIG)
    return config


def test_reload_picks_up_an_edited_handler_and_keeps_the_old_one_on_a_broken_edit(
    http_app: Path,
) -> None:
    app = http_app.parent / "app.py"
    with daemon(http_app, args=["--reload"]) as d:
        d.wait_for(lambda e: e.get("event") == "reload.ready")
        assert get(d) == "v1 hello"
        pid = d.proc.pid if d.proc else None

        write(app, APP.format(version="v2"))
        done = nth_event(d, "reload.done", 1)
        assert done["functions"] == ["hello"]
        assert get(d) == "v2 hello"

        write(app, "def handler(event, context):\n    return (\n")  # a syntax error
        failed = nth_event(d, "reload.failed", 1)
        assert "SyntaxError" in str(failed["error"]) or "app" in str(failed["error"])
        assert get(d) == "v2 hello"  # the old version keeps serving

        write(app, APP.format(version="v3"))
        nth_event(d, "reload.done", 2)
        assert get(d) == "v3 hello"
        assert d.proc is not None
        assert d.proc.pid == pid
        assert len(d.events("runtime.ready")) == 1  # never restarted


def test_reload_applies_a_config_edit_and_refuses_an_invalid_one(http_app: Path) -> None:
    with daemon(http_app, args=["--reload"]) as d:
        d.wait_for(lambda e: e.get("event") == "reload.ready")
        write(http_app, HTTP_CONFIG.replace("hello}", "bonjour}"))
        done = nth_event(d, "reload.done", 1)
        assert done["code_changed"] is False
        assert get(d) == "v1 bonjour"

        write(http_app, HTTP_CONFIG + "    no_such_key: 1\n")
        failed = nth_event(d, "reload.failed", 1)
        assert "no_such_key" in str(failed["error"])
        assert get(d) == "v1 bonjour"

        # what the async queue was built with needs a restart: said, and the rest applied
        edited = HTTP_CONFIG.replace("min_warm: 1", "min_warm: 1\n    maximum_retry_attempts: 0")
        write(http_app, edited.replace("hello}", "hallo}"))
        warned = nth_event(d, "reload.restart_required", 1)
        assert warned["changes"] == ["functions.hello.maximum_retry_attempts"]
        nth_event(d, "reload.done", 2)
        assert get(d) == "v1 hallo"


def test_sighup_reloads_a_daemon_without_watching(http_app: Path) -> None:
    with daemon(http_app) as d:
        ready = d.wait_for(lambda e: e.get("event") == "reload.ready")
        assert ready["watching"] == []
        assert d.proc is not None
        write(http_app.parent / "app.py", APP.format(version="v2"))
        time.sleep(0.5)  # nothing watches the files: no reload happens by itself
        assert get(d) == "v1 hello"
        assert d.events("reload.begin") == []

        d.proc.send_signal(signal.SIGHUP)
        nth_event(d, "reload.done", 1)
        assert get(d) == "v2 hello"

        write(http_app, "functions: [")
        d.proc.send_signal(signal.SIGHUP)
        nth_event(d, "reload.failed", 1)
        assert get(d) == "v2 hello"
        assert d.proc.poll() is None


STREAM_TRIGGERS = {
    "redis": """
connections:
  redis: {{main: {{url: "{url}"}}}}
functions:
  sink:
    handler: ledger.handler
    environment: {{LEDGER: "{ledger}"}}
    triggers:
      - redis_streams:
          connection: main
          streams: [{stream}]
          group: g
          starting_position: "0"
          batch_size: 10
""",
    "kafka": """
connections:
  kafka: {{main: {{bootstrap_servers: "{url}"}}}}
functions:
  sink:
    handler: ledger.handler
    environment: {{LEDGER: "{ledger}"}}
    triggers:
      - kafka:
          connection: main
          topics: [{stream}]
          group_id: g
          starting_position: TRIM_HORIZON
          batch_size: 10
""",
}

LEDGER = """
import base64, json, os, time
VERSION = {version!r}

def values(event):
    if "Records" in event:  # Redis Streams
        return [base64.b64decode(r["redis"]["data"]) for r in event["Records"]]
    return [base64.b64decode(r["value"]) for rs in event["records"].values() for r in rs]

def handler(event, context):
    time.sleep(0.02)  # a batch is in flight most of the time
    with open(os.environ["LEDGER"], "a") as f:
        for value in values(event):
            f.write(f"{{json.loads(value)['n']}} {{VERSION}}\\n")
"""


class Producer:
    """Sends ``{"n": N}`` records to a Redis stream or a Kafka topic (one partition)."""

    def __init__(self, kind: str, url: str, stream: str) -> None:
        self.kind = kind
        self.stream = stream
        if kind == "redis":
            self.client = redis.Redis.from_url(url)
        else:
            self._stack = contextlib.ExitStack()
            self.portal = self._stack.enter_context(start_blocking_portal())
            try:
                self.kafka = self.portal.call(self._start_kafka, url, stream)
            except BaseException:
                self._stack.close()
                raise

    @staticmethod
    async def _start_kafka(url: str, stream: str) -> Any:
        from aiokafka import AIOKafkaProducer

        await create_topic(url, 1, stream)
        producer = AIOKafkaProducer(bootstrap_servers=url, acks="all")
        await producer.start()
        return producer

    def send(self, n: int) -> None:
        doc = f'{{"n": {n}}}'.encode()
        if self.kind == "redis":
            self.client.xadd(self.stream, {"data": doc})
        else:
            self.portal.call(self.kafka.send_and_wait, self.stream, doc)

    def close(self) -> None:
        if self.kind == "kafka":
            self.portal.call(self.kafka.stop)
            self._stack.close()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ],
)
def test_a_reload_keeps_the_stream_position_and_loses_no_in_flight_record(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("redis_url")
        if kind == "redis"
        else request.getfixturevalue("kafka_broker").bootstrap
    )
    stream = f"reload-{os.getpid()}-{time.monotonic_ns()}"
    ledger = tmp_path / "ledger.txt"
    write(tmp_path / "ledger.py", LEDGER.format(version="v1"))
    config = tmp_path / "eventrun.yaml"
    write(config, STREAM_TRIGGERS[kind].format(url=url, ledger=ledger, stream=stream))
    producer = Producer(kind, url, stream)
    reloaded = threading.Event()
    produced: list[int] = []

    def produce() -> None:
        """Records every 5 ms until the reload is done, then 100 more."""
        after = 0
        while after < 100:
            producer.send(len(produced))
            produced.append(len(produced))
            after += reloaded.is_set()
            time.sleep(0.005)

    try:
        with daemon(config, args=["--reload"]) as d:
            d.wait_for(lambda e: e.get("event") == "reload.ready")
            thread = threading.Thread(target=produce)
            thread.start()
            try:
                d.wait_for(
                    lambda _e: ledger.exists() and len(ledger.read_text().splitlines()) >= 50
                )
                write(tmp_path / "ledger.py", LEDGER.format(version="v2"))
                nth_event(d, "reload.done", 1)
            finally:
                reloaded.set()
                thread.join()
            total = len(produced)
            deadline = time.monotonic() + 60
            while len(ledger.read_text().splitlines()) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            lines = [line.split() for line in ledger.read_text().splitlines()]
            # each record handled once: none lost in flight, none read again from an
            # older position
            assert sorted(int(n) for n, _ in lines) == list(range(total))
            versions = [v for _, v in lines]
            assert versions[0] == "v1"
            assert versions[-1] == "v2"
            assert versions == sorted(versions)  # one lane: v2 only after the switch
            assert len(d.events("runtime.ready")) == 1
            if kind == "redis":
                assert producer.client.xpending(stream, "g")["pending"] == 0
    finally:
        producer.close()


def test_bytecode_of_an_edit_within_the_second_is_dropped(tmp_path: Path) -> None:
    """Python would import a same-size edit saved in the same second as the old code."""
    import importlib.util
    import py_compile

    from eventrun.runtime._reload import drop_stale_bytecode

    old, new = tmp_path / "app.py", tmp_path / "lib" / "old.py"
    new.parent.mkdir()
    for source in (old, new):
        source.write_text("VERSION = 'v1'\n")
        py_compile.compile(str(source))
    stale = Path(importlib.util.cache_from_source(str(old)))
    kept = Path(importlib.util.cache_from_source(str(new)))
    old.write_text("VERSION = 'v2'\n")  # same size, same second as its bytecode
    long_ago = kept.stat().st_mtime - 60
    os.utime(new, (long_ago, long_ago))  # unchanged for a minute before its bytecode
    assert drop_stale_bytecode(tmp_path) == 1
    assert not stale.exists()
    assert kept.exists()


def test_the_watcher_reloads_on_handler_code_and_the_config_only(tmp_path: Path) -> None:
    from eventrun.runtime._reload import _relevant

    config = tmp_path / "eventrun.yaml"
    accept = _relevant(config)
    for path in ["app.py", "fns/orders/index.js", "fns/orders/index.mjs", "fns/go/bootstrap"]:
        assert accept(None, str(tmp_path / path)), path
    for path in [
        "__pycache__/app.cpython-311.pyc",
        "__pycache__/x.py",
        "fns/orders/node_modules/x/index.js",
        ".eventrun/state.db",
        "inbox/data.csv",
        "other.yaml",
    ]:
        assert not accept(None, str(tmp_path / path)), path
    assert accept(None, str(config))
    assert accept(None, str(tmp_path / "." / "eventrun.yaml"))  # spelled another way


def test_a_runtime_api_invocation_carries_the_invocation_spans_trace_header() -> None:
    from eventrun.common import TRACE_HEADER
    from eventrun.workers._rapi_invoke import trace_id

    fresh = trace_id()
    assert fresh.startswith("Root=1-")
    assert fresh.endswith(";Sampled=0")
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    token = TRACE_HEADER.set(header)
    try:
        assert trace_id() == header
    finally:
        TRACE_HEADER.reset(token)


def test_reload_needs_a_config_file_not_a_sam_template(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("AWSTemplateFormatVersion: '2010-09-09'\nResources: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "eventrun", "run", "-t", str(template), "--reload"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--reload needs -c" in result.stderr
