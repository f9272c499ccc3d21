"""Function URLs (``http`` triggers) on a real runtime: the payload-2.0 event a request
becomes, the response a return value maps to (table-driven), methods, errors and CORS.

One runtime serves the module's tests; it runs on its own event loop in a blocking portal.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from starlette.requests import Request

from eventrun.runtime._runtime import Runtime
from eventrun.sources.http import build_event, map_response
from tests._runtime_kit import running_app, write_app

TOKEN = "function-url-token"

APP_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
    triggers:
      - http: {path: /echo, methods: [GET, POST, PUT], auth: none}
      - http: {path: "/users/{id}/posts/{post}", methods: [GET], auth: none}
  respond:
    handler: fns:respond
    triggers:
      - http: {path: /respond, methods: [POST], auth: none}
  boom:
    handler: fns:boom
    triggers:
      - http: {path: /boom, auth: none}
  cors:
    handler: fns:echo
    triggers:
      - http:
          path: /cors
          methods: [GET, POST]
          cors:
            allow_origins: ["https://app.example"]
            allow_methods: [GET, POST]
            allow_headers: [content-type, authorization]
            expose_headers: [x-trace]
            max_age: 600
            allow_credentials: true
  gate:
    handler: fns:gate
    concurrency: 1
    triggers:
      - http: {path: /gate, methods: [POST], auth: none}
  star:
    handler: fns:echo
    triggers:
      - http: {path: /star, methods: ["*"], auth: none, cors: {allow_origins: ["*"]}}
"""

FNS = """
import json


def echo(event, context):
    return {"statusCode": 200, "headers": {"x-trace": "t-1"}, "body": json.dumps(event)}


def respond(event, context):
    # the test POSTs the value the handler should return
    return json.loads(event["body"])


def boom(event, context):
    raise RuntimeError("function URL failure")


def gate(event, context):
    # a rendezvous with the test: "in" once running, then block until the test answers
    import socket
    with socket.create_connection(("127.0.0.1", json.loads(event["body"])["port"])) as s:
        s.sendall(b"in")
        s.recv(1)
    return "released"
"""


@dataclass
class App:
    runtime: Runtime
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def invocations(self, function: str) -> int:
        return int(self.runtime.functions[function].runner.statistics()["invocations"])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    config = write_app(tmp_path_factory.mktemp("http"), APP_YAML, {"fns.py": FNS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVENTRUN_TOKENS", TOKEN)
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(running_app(config)) as runtime,
        ):
            yield App(runtime, f"http://127.0.0.1:{runtime.bound_port}")


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    event: dict[str, Any] = json.loads(response.content)
    return event


# -- request -> event ------------------------------------------------------------------


def test_event_has_the_payload_2_0_shape(app: App) -> None:
    with app.client() as http:
        event = echoed(http.get("/echo", headers={"User-Agent": "test-agent/1"}))
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/echo"
    assert event["rawQueryString"] == ""
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    assert "queryStringParameters" not in event
    assert "cookies" not in event
    ctx = event["requestContext"]
    assert ctx["http"] == {
        "method": "GET",
        "path": "/echo",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "test-agent/1",
    }
    assert ctx["routeKey"] == "$default"
    assert ctx["stage"] == "$default"
    assert ctx["domainName"] == f"127.0.0.1:{app.runtime.bound_port}"
    assert isinstance(ctx["timeEpoch"], int)
    assert len(ctx["requestId"]) == 36
    assert ctx["time"].endswith(" +0000")


BODIES = [
    pytest.param(
        "text/plain; charset=utf-8", "héllo wörld".encode(), "héllo wörld", False, id="text"
    ),
    pytest.param("application/json", b'{"a": 1}', '{"a": 1}', False, id="json"),
    pytest.param("application/x-www-form-urlencoded", b"a=1&b=2", "a=1&b=2", False, id="form"),
    pytest.param("application/vnd.api+json", b"[]", "[]", False, id="json-suffix"),
    pytest.param(
        "application/octet-stream",
        b"\x00\xff\x10binary",
        base64.b64encode(b"\x00\xff\x10binary").decode(),
        True,
        id="binary",
    ),
    pytest.param(
        "image/png", b"\x89PNG\r\n", base64.b64encode(b"\x89PNG\r\n").decode(), True, id="image"
    ),
    pytest.param(
        "text/plain",
        b"\xff\xfe not utf-8",
        base64.b64encode(b"\xff\xfe not utf-8").decode(),
        True,
        id="text-not-utf8",
    ),
]


@pytest.mark.parametrize(("content_type", "sent", "body", "is_base64"), BODIES)
def test_request_body_is_text_or_base64(
    app: App, content_type: str, sent: bytes, body: str, is_base64: bool
) -> None:
    with app.client() as http:
        event = echoed(http.post("/echo", content=sent, headers={"content-type": content_type}))
    assert event["body"] == body
    assert event["isBase64Encoded"] is is_base64
    if is_base64:
        assert base64.b64decode(event["body"]) == sent


def test_query_string_duplicates_are_joined_with_commas(app: App) -> None:
    with app.client() as http:
        event = echoed(http.get("/echo?a=1&b=x&a=2&empty="))
    assert event["rawQueryString"] == "a=1&b=x&a=2&empty="
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x", "empty": ""}


def test_headers_are_lowercased_and_duplicates_joined(app: App) -> None:
    with app.client() as http:
        event = echoed(
            http.get("/echo", headers=[("X-Multi", "one"), ("X-Multi", "two"), ("X-Single", "s")])
        )
    assert event["headers"]["x-multi"] == "one,two"
    assert event["headers"]["x-single"] == "s"
    assert all(name == name.lower() for name in event["headers"])


def _build_time(repeats: int) -> float:
    """Best of three: seconds to build the event of a request repeating one header."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/echo",
        "query_string": b"&".join([b"q=1"] * (repeats // 15)),
        "headers": [(b"host", b"x"), *[(b"x-a", b"y")] * repeats, (b"X-A", b"z")],
    }
    times = []
    for _ in range(3):
        began = time.perf_counter()
        event = build_event(Request(scope), b"")
        times.append(time.perf_counter() - began)
    assert event["headers"]["x-a"] == ",".join(["y"] * repeats + ["z"])
    assert event["headers"]["host"] == "x"
    assert event["queryStringParameters"] == {"q": ",".join(["1"] * (repeats // 15))}
    return min(times)


def test_many_repeated_headers_are_joined_once() -> None:
    """The event builder alone: four times the repeats take about four times as long (a
    join at each repeat copied the value so far every time: sixteen times as long, 8 s
    for 300,000 repeats here). Both sizes are timed side by side, best of three, so the
    ratio holds with the cores busy where an absolute bound would not."""
    small, large = _build_time(75_000), _build_time(300_000)
    assert large / small < 8, f"75,000 repeats {small:.3f} s, 300,000 {large:.3f} s"


def test_repeated_headers_on_a_public_function_url(tmp_path: Path) -> None:
    """Over the wire, with the head limits raised for the test: 500,000 ``X-A: y`` lines
    to an ``auth: none`` URL (the old code held the daemon's loop for 15 s and more).
    The handler answers the joined value's length and a probe of it."""
    yaml = """
        server: {max_request_headers: 600000, max_request_head_bytes: 8388608}
        store: {url: "sqlite:///state.db"}
        functions:
          pub:
            handler: fns:measure
            runtime: inline
            triggers:
              - http: {path: /pub, methods: [GET], auth: none}
    """
    fns = """
        async def measure(event, context):
            value = event["headers"]["x-a"]
            return {"length": len(value), "parts": value.count(",") + 1, "head": value[:7]}
    """
    repeats = 500_000
    config = write_app(tmp_path, yaml, {"fns.py": fns})
    request = b"GET /pub HTTP/1.1\r\nhost: localhost\r\n" + b"X-A: y\r\n" * repeats + b"\r\n"
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(running_app(config)) as runtime,
    ):
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", runtime.bound_port), timeout=30) as s:
            s.sendall(request)
            answer = b""
            while not answer.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, answer
                answer += chunk
        took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body == {"length": 2 * repeats - 1, "parts": repeats, "head": "y,y,y,y"}
    print(f"{repeats} repeated headers: {took:.2f} s")
    # the linear code takes about a second here (up to 5 with coverage and both cores
    # busy); the quadratic one held the loop 21 s
    assert took < 12.0, f"{repeats} repeated headers took {took:.1f} s"


def test_cookies_go_to_the_cookies_list(app: App) -> None:
    with app.client() as http:
        event = echoed(http.get("/echo", headers={"Cookie": "c1=v1; c2=v2"}))
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]


def test_path_parameters(app: App) -> None:
    with app.client() as http:
        event = echoed(http.get("/users/42/posts/hello-world"))
    assert event["pathParameters"] == {"id": "42", "post": "hello-world"}
    assert event["rawPath"] == "/users/42/posts/hello-world"
    assert event["requestContext"]["http"]["path"] == "/users/42/posts/hello-world"


# -- return value -> response ---------------------------------------------------------

RESPONSES = [
    pytest.param(
        {
            "statusCode": 201,
            "headers": {"X-Custom": "v", "Content-Type": "text/plain"},
            "body": "made",
        },
        201,
        {"x-custom": "v", "content-type": "text/plain"},
        b"made",
        id="full",
    ),
    pytest.param(
        {"statusCode": 404, "body": '{"error": "missing"}'},
        404,
        {"content-type": "application/json"},
        b'{"error": "missing"}',
        id="status-only",
    ),
    pytest.param(
        {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(b"\x00\x01\xfe\xff").decode(),
            "isBase64Encoded": True,
        },
        200,
        {"content-type": "application/octet-stream"},
        b"\x00\x01\xfe\xff",
        id="base64-body",
    ),
    pytest.param({"statusCode": 204}, 204, {}, b"", id="no-body"),
    pytest.param(
        {"statusCode": 200, "body": {"a": [1, None]}},
        200,
        {"content-type": "application/json"},
        b'{"a": [1, null]}',
        id="non-string-body-as-json",
    ),
    pytest.param(
        "Hello, world!",
        200,
        {"content-type": "application/json"},
        b'"Hello, world!"',
        id="bare-string-keeps-quotes",
    ),
    pytest.param(42, 200, {"content-type": "application/json"}, b"42", id="bare-number"),
    pytest.param(
        {"message": "hi", "n": [1, 2]},
        200,
        {"content-type": "application/json"},
        None,
        id="object-shortcut",
    ),
    pytest.param([1, "two"], 200, {"content-type": "application/json"}, None, id="list-shortcut"),
]


@pytest.mark.parametrize(("returned", "status", "headers", "body"), RESPONSES)
def test_return_value_maps_to_the_response(
    app: App, returned: Any, status: int, headers: dict[str, str], body: bytes | None
) -> None:
    with app.client() as http:
        r = http.post("/respond", json=returned)
    assert r.status_code == status
    for name, value in headers.items():
        assert r.headers[name] == value
    if body is None:  # the shortcut: the JSON serialisation of the value
        assert json.loads(r.content) == returned
    else:
        assert r.content == body
    assert r.headers["x-amzn-RequestId"]


def test_request_id_header_is_eventruns_once_even_if_the_handler_set_one(app: App) -> None:
    returned = {"statusCode": 200, "headers": {"X-Amzn-RequestId": "mine"}, "body": "ok"}
    with app.client() as http:
        mine = http.post("/respond", json=returned)
        plain = http.post("/respond", json={"statusCode": 200, "body": "ok"})
    for r in (mine, plain):
        [rid] = r.headers.get_list("x-amzn-requestid")
        assert rid != "mine"
        assert len(rid) == 36
    assert mine.headers["x-amzn-requestid"] != plain.headers["x-amzn-requestid"]


def test_bare_string_body_has_the_quoted_length(app: App) -> None:
    with app.client() as http:
        r = http.post("/respond", json="Hello, world!")
    assert r.headers["content-length"] == "15"


def test_cookies_become_set_cookie_headers(app: App) -> None:
    cookies = ["a=1; Path=/; HttpOnly", "b=2; Max-Age=78000"]
    with app.client() as http:
        r = http.post("/respond", json={"statusCode": 200, "body": "ok", "cookies": cookies})
    assert r.headers.get_list("set-cookie") == cookies
    assert r.text == "ok"


def test_handler_error_is_502(app: App) -> None:
    with app.client() as http:
        r = http.get("/boom")
    assert r.status_code == 502
    assert r.json() == {"Message": "Internal Server Error"}
    assert r.headers["x-amzn-RequestId"]


def test_methods_not_allowed_are_405(app: App) -> None:
    with app.client() as http:
        assert http.delete("/echo").status_code == 405
        assert http.patch("/echo").status_code == 405
        assert http.post("/users/1/posts/2").status_code == 405
        assert http.get("/respond").status_code == 405
        assert http.put("/echo", content=b"x").status_code == 200
        assert http.get("/nowhere").status_code == 404


def test_over_6mb_is_413(app: App) -> None:
    with app.client() as http:
        r = http.post("/echo", content=b"x" * (6 * 1024 * 1024 + 1))
    assert r.status_code == 413


def test_map_response_of_a_non_json_payload_is_passed_through() -> None:
    response = map_response(b"not json")
    assert response.status_code == 200
    assert response.body == b"not json"


def test_map_response_passes_on_what_neither_parser_reads() -> None:
    """A payload that mentions statusCode but is malformed, or nested past the parsers'
    recursion limit (msgspec's, or json's after msgspec refused a NaN), is the body as is."""
    for payload in (
        b'{"statusCode": 200, oops',
        b'{"statusCode": 1, "x": ' + b"[" * 200_000,
        b'{"statusCode": 1, "x": NaN, "y": ' + b"[" * 200_000,
    ):
        response = map_response(payload)
        assert (response.status_code, response.body) == (200, payload)


def test_a_saturated_function_url_is_429_while_its_slot_is_held(app: App) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, app.client() as http:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        first: dict[str, httpx.Response] = {}
        holder = threading.Thread(
            target=lambda: first.update(r=http.post("/gate", json={"port": port}))
        )
        holder.start()
        inside, _ = listener.accept()
        with inside:
            assert inside.recv(2) == b"in"
            try:
                r = http.post("/gate", json={"port": port})
                assert r.status_code == 429
                assert r.json() == {"Message": "Too Many Requests"}
            finally:
                inside.sendall(b"x")
        holder.join(30)
    assert first["r"].status_code == 200
    assert first["r"].json() == "released"


# -- CORS ------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


def test_preflight_is_answered_without_a_token_and_without_invoking(app: App) -> None:
    before = app.invocations("cors")
    with app.client() as http:
        r = http.options("/cors", headers=PREFLIGHT)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-methods"] == "GET,POST"
    assert r.headers["access-control-allow-headers"] == "content-type,authorization"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["vary"] == "Origin"
    assert app.invocations("cors") == before


def test_preflight_from_an_unknown_origin_gets_no_allow_origin(app: App) -> None:
    with app.client() as http:
        r = http.options("/cors", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_cors_headers_on_the_actual_response(app: App) -> None:
    with app.client() as http:
        denied = http.get("/cors", headers={"Origin": "https://app.example"})
        r = http.get(
            "/cors",
            headers={"Origin": "https://app.example", "Authorization": f"Bearer {TOKEN}"},
        )
        other = http.get(
            "/cors", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"}
        )
    assert denied.status_code == 401  # CORS does not open the function URL
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-expose-headers"] == "x-trace"
    assert r.headers["x-trace"] == "t-1"
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_wildcard_origin_and_any_method(app: App) -> None:
    before = app.invocations("star")
    with app.client() as http:
        pre = http.options("/star", headers={**PREFLIGHT, "Origin": "https://x.example"})
        assert app.invocations("star") == before  # the preflight route wins over "*"
        r = http.delete("/star", headers={"Origin": "https://x.example"})
    assert pre.headers["access-control-allow-origin"] == "*"
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers
    assert json.loads(r.content)["requestContext"]["http"]["method"] == "DELETE"


def test_no_cors_config_means_no_cors_headers(app: App) -> None:
    with app.client() as http:
        r = http.get("/echo", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_map_response_reads_what_python_json_writes() -> None:
    """Handlers are marshalled with Python's json (NaN allowed); the shortcut needs no
    parse, a mapped response is parsed by msgspec or, failing that, by json."""
    mapped = map_response(b'{"statusCode": 201, "body": "x", "score": NaN}')
    assert (mapped.status_code, mapped.body) == (201, b"x")
    shortcut = map_response(b'{"ok": true}')
    assert (shortcut.status_code, shortcut.body) == (200, b'{"ok": true}')
    listed = map_response(b'["statusCode", 404]')
    assert (listed.status_code, listed.body) == (200, b'["statusCode", 404]')


# -- the daemon's credentials and the network (security issue #31) ---------------------


def test_the_daemons_credentials_never_reach_the_handler(app: App) -> None:
    """The status page's session cookie and, on an ``auth: token`` route, the
    Authorization header (the daemon's bearer token) are not in the event."""
    with app.client() as http:
        closed = echoed(
            http.get(
                "/cors",
                headers={"Authorization": f"Bearer {TOKEN}", "Cookie": "eventrun_session=abc"},
            )
        )
        public = echoed(
            http.get(
                "/echo",
                headers={
                    "Authorization": "Bearer the-apps-own",
                    "Cookie": "c1=v1; eventrun_session=abc.1.f; c2=v2",
                },
            )
        )
    assert "authorization" not in closed["headers"]
    assert TOKEN not in json.dumps(closed)
    assert "cookies" not in closed
    # an `auth: none` function URL keeps its callers' own Authorization and cookies
    assert public["headers"]["authorization"] == "Bearer the-apps-own"
    assert public["cookies"] == ["c1=v1", "c2=v2"]


def test_forwarded_headers_from_loopback_are_not_trusted_by_default(app: App) -> None:
    spoof = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    with app.client() as http:
        event = echoed(http.get("/echo", headers=spoof))
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"


async def test_forwarded_headers_from_a_configured_proxy_are_used(tmp_path: Path) -> None:
    yaml = "server: {forwarded_allow_ips: [127.0.0.1]}\n" + APP_YAML
    config = write_app(tmp_path, yaml, {"fns.py": FNS})
    async with (
        running_app(config) as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}") as http,
    ):
        r = await http.get("/echo", headers={"X-Forwarded-For": "203.0.113.9"})
    assert echoed(r)["requestContext"]["http"]["sourceIp"] == "203.0.113.9"


def test_function_urls_refuse_a_foreign_host(app: App) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends its own name."""
    port = app.runtime.bound_port
    before = app.invocations("echo")
    with app.client() as http:
        r = http.get("/echo", headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 421
        assert app.invocations("echo") == before  # refused before the function ran
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
            assert http.get("/echo", headers={"Host": host}).status_code == 200, host
