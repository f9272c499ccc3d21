"""The http(s):// sink against a real HTTP server on loopback (http.server in a thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import structlog

from eventrun.abc import OutMessage, SinkSpec
from eventrun.dispatch._destinations import UNDELIVERABLE, SinkRouter
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun.sinks.http import HttpSink, create
from eventrun.store import _dlq
from eventrun.store._open import open_store
from tests.fixtures._ports import free_port

FAST = (0.01, 0.02)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Webhook:
    """A real webhook: records every POST and answers with the next scripted status."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)
    """While clear, a status of 0 makes the handler hang (a timeout) until it is set."""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            hook.requests.append(Request(self.path, headers, body))
            status = hook.statuses.pop(0) if hook.statuses else 200
            if status == 0:
                hook.hang.wait(10)
                status = 200
            answer = b'{"error":"nope"}' if status >= 400 else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/orders?x=1"
    try:
        yield hook
    finally:
        hook.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_registered_for_http_and_https() -> None:
    for name in ("http", "https"):
        [point] = entry_points(group="eventrun.sinks", name=name)
        assert point.load() is create


async def test_posts_each_message_in_order_as_json(webhook: Webhook) -> None:
    spec = SinkSpec(url=webhook.url, kind="http", target=webhook.url)
    async with create(spec) as sink:
        await sink.send([OutMessage(b'{"n":1}', key="order-7"), OutMessage(b'{"n":2}')])
        webhook.statuses.append(204)
        await sink.send([OutMessage(b'{"n":3}')])
    assert [r.body for r in webhook.requests] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert {r.path for r in webhook.requests} == {"/hooks/orders?x=1"}
    assert all(r.headers["content-type"] == "application/json" for r in webhook.requests)
    assert webhook.requests[0].headers["x-eventrun-key"] == "order-7"
    assert "x-eventrun-key" not in webhook.requests[1].headers


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_transient_failures_are_retried_inside_send(webhook: Webhook, status: int) -> None:
    webhook.statuses += [status, status]
    async with HttpSink(webhook.url, retry_delays_s=FAST) as sink:
        await sink.send([OutMessage(b'{"n":1}')])
    assert [r.body for r in webhook.requests] == [b'{"n":1}'] * 3


async def test_a_webhook_that_stays_down_is_sink_unavailable(webhook: Webhook) -> None:
    webhook.statuses += [502] * 10
    async with HttpSink(webhook.url, retry_delays_s=FAST) as sink:
        with pytest.raises(SinkUnavailable, match=r"after 3 attempts: HTTP 502") as caught:
            await sink.send([OutMessage(b"{}")])
    assert "/hooks/orders" in str(caught.value)
    assert "x=1" not in str(caught.value)  # query strings carry webhook tokens
    assert len(webhook.requests) == 3


async def test_a_refusal_is_sink_rejected_without_retries(webhook: Webhook) -> None:
    webhook.statuses.append(400)
    async with HttpSink(webhook.url, retry_delays_s=FAST) as sink:
        with pytest.raises(SinkRejected, match=r"HTTP 400: \{\"error\":\"nope\"\}"):
            await sink.send([OutMessage(b"{}"), OutMessage(b"{}")])
    assert len(webhook.requests) == 1


async def test_nothing_listening_is_sink_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    async with HttpSink(url, retry_delays_s=FAST) as sink:
        with pytest.raises(SinkUnavailable, match="ConnectError"):
            await sink.send([OutMessage(b"{}")])


async def test_a_hanging_webhook_times_out_and_is_sink_unavailable(webhook: Webhook) -> None:
    webhook.statuses += [0, 0]
    async with HttpSink(webhook.url, timeout_s=0.2, retry_delays_s=(0.01,)) as sink:
        with pytest.raises(SinkUnavailable, match="ReadTimeout"):
            await sink.send([OutMessage(b"{}")])
    assert len(webhook.requests) == 2


async def test_send_outside_async_with_is_a_programming_error(webhook: Webhook) -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await HttpSink(webhook.url).send([OutMessage(b"{}")])


@pytest.mark.parametrize("url", ["http://", "ftp://host/x", "https:///path"])
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        create(SinkSpec(url=url, kind="http", target=url))


# -- what the router logs and keeps of a webhook URL (security issue #31) ---------------


async def test_webhook_credentials_stay_out_of_logs_and_undeliverable_entries(
    webhook: Webhook, tmp_path: Path
) -> None:
    """A destination URL's user, password and query (``?sig=``) are secrets: the router's
    ``sink.send_failed`` / ``sink.rejected`` logs and the ``local:eventrun-undeliverable``
    entry show ``public_destination(url)`` only."""
    base = webhook.url.split("?")[0].replace("http://", "")
    url = f"http://hookuser:hook-pa55@{base}?sig=s3cr3t-sig"
    public = f"http://{base}"
    store = open_store("sqlite:///state.db", config_dir=tmp_path)
    # down for one send (3 retries inside the sink), then up; then a 400 (rejected)
    webhook.statuses = [500, 500, 500, 500, 200, 400]
    message = [OutMessage(payload=b'{"n": 1}')]
    with structlog.testing.capture_logs() as logs:
        async with store, SinkRouter(connections=None, config_dir=tmp_path, store=store) as r:
            await r.send(url, message)  # returns once the webhook took it
            await r.send(url, message)  # rejected: kept as undeliverable
            entries = await _dlq.list_entries(store, UNDELIVERABLE)
    failed = [e for e in logs if e["event"] == "sink.send_failed"]
    rejected = [e for e in logs if e["event"] == "sink.rejected"]
    assert len(failed) == 1
    assert len(rejected) == 1
    assert failed[0]["destination"] == rejected[0]["destination"] == public
    assert len(entries) == 1
    assert entries[0]["meta"]["destination"] == public
    for secret in ("hook-pa55", "hookuser", "s3cr3t-sig"):
        assert secret not in repr(logs), secret
        assert secret not in repr(entries), secret
