"""The direct ASGI path (eventrun.server._fastpath) answers exactly as Starlette's path does.

Each request goes to the app twice: through :class:`FastApp` (the responder) and through
plain ``Starlette.__call__`` (middleware, router, the route's Starlette endpoint); status,
headers (request ids aside) and body must be the same.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette

from eventrun.server._api import build_app
from eventrun.server._fastpath import FastApp
from tests._runtime_kit import running_app, write_app

YAML = """
server: {host: 127.0.0.1, allowed_hosts: [x], auth: {mode: token, tokens_env: FAST_TOKENS}}
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns.echo
    runtime: inline
  boom:
    handler: fns.boom
    runtime: inline
  web:
    handler: fns.web
    runtime: inline
    triggers:
      - http: {path: /web, methods: [GET, POST], auth: none, cors: {allow_origins: ["*"]}}
      - http: {path: /healthz, methods: [POST], auth: none}
      - http: {path: "/private/{item}", methods: ["*"]}
"""

FNS = """
async def echo(event, context):
    return event

async def boom(event, context):
    raise ValueError("boom")

async def web(event, context):
    if event.get("rawPath") == "/web":
        return {"statusCode": 201, "headers": {"x-a": "1"}, "body": event.get("body") or "",
                "cookies": ["c=1"]}
    return {"path": event["rawPath"], "params": event.get("pathParameters")}
"""

INVOKE = "/2015-03-31/functions/{}/invocations"
TOKEN = [(b"authorization", b"Bearer s3cret-fast-token-16")]


@asynccontextmanager
async def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastApp]:
    """The daemon's app over a running runtime (entered in the test's own task: the
    runtime's task group must be left in the task that entered it)."""
    monkeypatch.setenv("FAST_TOKENS", "s3cret-fast-token-16")
    config = write_app(tmp_path, YAML, {"fns.py": FNS})
    async with running_app(config, serve_http=False) as runtime:
        app = build_app(runtime)
        assert isinstance(app, FastApp)
        yield app


async def _call(
    app: Any,
    method: str,
    path: str,
    chunks: Sequence[bytes] = (b"{}",),
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    disconnect: bool = False,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"a=1",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 9000),
        "state": {},
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    start, body = out[0], b"".join(m.get("body", b"") for m in out[1:])
    return start["status"], list(start["headers"]), body


def _normal(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    varying = (b"x-amzn-requestid", b"x-amz-log-result")  # request id, duration
    return [(k, b"<varies>" if k in varying else v) for k, v in headers]


async def _same(app: FastApp, *args: Any, **kw: Any) -> tuple[int, bytes]:
    fast = await _call(app, *args, **kw)
    slow = await _call(lambda s, r, w: Starlette.__call__(app, s, r, w), *args, **kw)
    assert fast[0] == slow[0]
    assert _normal(fast[1]) == _normal(slow[1])
    if b"requestId" not in fast[2]:
        assert fast[2] == slow[2]
    return fast[0], fast[2]


async def test_invoke_api_answers_as_starlette_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch) as app:
        tail = [(b"x-amz-log-type", b"Tail")]
        ctx = base64.b64encode(json.dumps({"custom": {"a": 1}}).encode())
        cases: list[tuple[Any, ...]] = [
            ("POST", INVOKE.format("echo"), [b'{"a":', b" 1}"], TOKEN),
            ("POST", INVOKE.format("echo"), [b""], [*TOKEN, (b"x-amz-client-context", ctx)]),
            ("POST", INVOKE.format("boom"), [b"{}"], TOKEN),
            ("POST", INVOKE.format("nope"), [b"{}"], TOKEN),
            ("POST", INVOKE.format("echo"), [b"{nope"], TOKEN),
            (
                "POST",
                INVOKE.format("echo"),
                [b"{}"],
                [*TOKEN, (b"x-amz-invocation-type", b"DryRun")],
            ),
            ("POST", INVOKE.format("echo"), [b"{}"], [*TOKEN, (b"x-amz-invocation-type", b"Bad")]),
            ("POST", INVOKE.format("echo"), [b"{}"], [*TOKEN, (b"content-length", b"7000000")]),
            ("POST", INVOKE.format("echo"), [b"1" * 4_000_000] * 2, TOKEN),
            ("POST", INVOKE.format("echo"), [b"{}"], []),
            ("POST", INVOKE.format("echo"), [b"{}"], [(b"authorization", b"Bearer wrong")]),
            ("POST", INVOKE.format("arn:aws:lambda:us-east-1:1:function:echo"), [b"[1]"], TOKEN),
        ]
        statuses = [(await _same(app, *case))[0] for case in cases]
        assert statuses == [200, 200, 200, 404, 400, 204, 400, 413, 413, 401, 401, 200]
        status, body = await _same(app, "POST", INVOKE.format("echo"), [b"[1]"], [*TOKEN, *tail])
        assert (status, body) == (200, b"[1]")


async def test_disconnect_mid_body_keeps_what_arrived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch) as app:
        status, body = await _same(app, "POST", INVOKE.format("echo"), [b"[1,", b"2]"], TOKEN)
        assert (status, json.loads(body)) == (200, [1, 2])
        args = ("POST", INVOKE.format("echo"), [b"[1]"], TOKEN)
        status, body = await _same(app, *args, disconnect=True)
        assert (status, body) == (200, b"[1]")


async def test_function_urls_answer_as_starlette_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch) as app:
        origin = [(b"origin", b"https://a.example")]
        status, body = await _same(app, "POST", "/web", [b"hi"], origin)
        assert (status, body) == (201, b"hi")
        assert (await _same(app, "OPTIONS", "/web", [b""], origin))[0] == 200
        assert (await _same(app, "PUT", "/web", [b""]))[0] == 405
        # a function URL at /healthz takes POST; GET stays the health check
        status, body = await _same(app, "POST", "/healthz", [b"{}"])
        assert (status, json.loads(body)) == (200, {"path": "/healthz", "params": None})
        assert (await _same(app, "GET", "/healthz", [b""]))[0] == 200
        # an authenticated function URL with a path parameter
        assert (await _same(app, "DELETE", "/private/x1", [b""]))[0] == 401
        status, body = await _same(app, "DELETE", "/private/x1", [b""], TOKEN)
        assert json.loads(body) == {"path": "/private/x1", "params": {"item": "x1"}}
        status, body = await _same(app, "GET", "/private/x2", [b""], TOKEN)
        assert json.loads(body) == {"path": "/private/x2", "params": {"item": "x2"}}
        assert (await _same(app, "POST", "/web", [b"x" * (6 * 1024 * 1024 + 1)]))[0] == 413


async def test_unexpected_error_is_a_500_then_raised() -> None:
    async def respond(scope: Any, receive: Any) -> Any:
        raise RuntimeError("bug")

    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Any) -> Response:
        return await respond(request.scope, request.receive)

    route = Route("/x", endpoint, methods=["POST"])
    app = FastApp([route], {id(route): respond})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    with pytest.raises(RuntimeError, match="bug"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b"Internal Server Error"


async def test_route_memo_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(tmp_path, monkeypatch) as app:
        for i in range(1100):
            await _call(app, "POST", INVOKE.format(f"f{i}"), [b"{}"], TOKEN)
        assert len(app._hits) <= 1024
