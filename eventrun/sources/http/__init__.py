"""The ``http`` trigger: a Lambda function URL on the daemon's server.

Requests become API Gateway HTTP API / Function URL payload format 2.0 events (1.0, the
REST API proxy event, with ``payload_format: "1.0"``: see ``_v1``); the
handler's return value maps back to an HTTP response exactly as Function URLs do:

* a JSON object with ``statusCode`` -> that status, ``headers``, ``body`` (base64-decoded
  when ``isBase64Encoded``), each ``cookies`` entry as a ``set-cookie`` header;
* anything else (the shortcut) -> 200, ``content-type: application/json``, the body being
  the JSON serialisation of the return value (a returned string keeps its quotes);
* a handler error -> 502 ``{"Message": "Internal Server Error"}``; a saturated function ->
  429 ``{"Message": "Too Many Requests"}``.

The daemon's credentials are not passed on: the status page's session cookie
(``eventrun_session``) never appears in ``cookies``, and on an ``auth: token`` route the
``Authorization`` header (the daemon's bearer token) is left out of ``headers``.

Request bodies are passed as text when their content type is textual (text/*, JSON, XML,
form, JavaScript) and base64 with ``isBase64Encoded: true`` otherwise. CORS follows the
Function URL settings (``allow_origins``, ``allow_methods``...), answering preflights
without invoking the function.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import anyio
import msgspec
from anyio.abc import TaskStatus
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope

from eventrun.abc import Route, SourceContext, SourceSpec
from eventrun.asgi import SESSION_COOKIE, JSONBytesResponse, header, new_request_id, read_body
from eventrun.exceptions import FunctionSaturated
from eventrun.sources.http._v1 import bad_gateway_v1, event_v1, map_response_v1

__all__ = ["HttpSource", "build_event", "create", "map_response"]

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_TEXT_SUFFIXES = ("+json", "+xml", "x-www-form-urlencoded")
_OURS = SESSION_COOKIE + "="


def create(spec: SourceSpec) -> HttpSource:
    return HttpSource(spec)


@functools.lru_cache(maxsize=64)
def _is_text(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct.startswith(_TEXT_TYPES) or ct.endswith(_TEXT_SUFFIXES)


@functools.lru_cache(maxsize=4)
def _request_time(second: int) -> str:
    """``requestContext.time`` (``22/Nov/2026:06:33:30 +0000``), formatted once a second."""
    return datetime.fromtimestamp(second, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def build_event(request: Request, body: bytes, *, token_auth: bool = False) -> dict[str, Any]:
    """The payload-format-2.0 event for a request (see :func:`_event`)."""
    return _event(request.scope, body, token_auth)


def _collect(pairs: Iterable[tuple[str, str]], into: dict[str, str]) -> None:
    """``into[name]``: the values of ``name`` joined with commas, as payload format 2.0
    joins repeated headers and query parameters. A repeated name collects its values in
    a list and is joined once: joining at each repeat copied the value so far every time,
    quadratic in the number of repeats (600,000 repeated headers held the loop 11 s)."""
    repeated: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in into:
            into[name] = value
        elif name in repeated:
            repeated[name].append(value)
        else:
            repeated[name] = [into[name], value]
    for name, values in repeated.items():
        into[name] = ",".join(values)


def _headers(
    raw: Iterable[tuple[bytes, bytes]], token_auth: bool = False
) -> tuple[dict[str, str], list[str]]:
    """The event's ``headers`` (repeats joined as :func:`_collect` does, without a list of
    pairs first) and ``cookies``.

    The daemon's own credentials never reach a handler: the status page's session cookie
    is dropped from ``cookies``, and on a ``token_auth`` route (``auth: token``) the
    ``Authorization`` header, which holds the daemon's bearer token, is too."""
    headers: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    cookies: list[str] = []
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name == "cookie":
            cookies.extend(
                c for c in (c.strip() for c in value.split(";")) if c and not c.startswith(_OURS)
            )
        elif token_auth and name == "authorization":
            continue
        elif name not in headers:
            headers[name] = value
        elif name in repeated:
            repeated[name].append(value)
        else:
            repeated[name] = [headers[name], value]
    for name, values in repeated.items():
        headers[name] = ",".join(values)
    return headers, cookies


def _event(scope: Scope, body: bytes, token_auth: bool = False) -> dict[str, Any]:
    """:func:`build_event` straight from the ASGI scope (this runs once per request)."""
    headers, cookies = _headers(scope["headers"], token_auth)
    raw_query: bytes = scope.get("query_string", b"")
    query: dict[str, str] = {}
    if raw_query:
        _collect(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True), query)
    # what starlette's request.url.path gives, without building the whole URL
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    now = time.time()
    client = scope.get("client")
    host = headers.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query.decode(),
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "eventrun",
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": scope["method"],
                "path": path,
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
                "sourceIp": client[0] if client else "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": new_request_id(),
            "routeKey": "$default",
            "stage": "$default",
            "time": _request_time(int(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    path_params = scope.get("path_params")
    if path_params:
        event["pathParameters"] = {k: str(v) for k, v in path_params.items()}
    if body:
        if _is_text(headers.get("content-type", "")):
            try:
                event["body"] = body.decode()
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def map_response(payload: bytes) -> Response:
    """Map a handler's JSON return value to a response, as Function URLs do."""
    if b'"statusCode"' not in payload:  # the shortcut, known without parsing
        return JSONBytesResponse(payload)
    try:
        value = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        try:  # what msgspec refuses and Python's json writes: NaN, Infinity
            value = json.loads(payload)
        except (ValueError, RecursionError):
            value = None
    except RecursionError:  # nested too deeply to read: passed on as it is
        value = None
    if not isinstance(value, dict) or "statusCode" not in value:
        return JSONBytesResponse(payload)
    status = int(value.get("statusCode") or 200)
    body = value.get("body")
    content: bytes
    if body is None:
        content = b""
    elif value.get("isBase64Encoded"):
        content = base64.b64decode(body)
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = json.dumps(body).encode()
    headers = {str(k): str(v) for k, v in (value.get("headers") or {}).items()}
    if not any(k.lower() == "content-type" for k in headers):
        headers["content-type"] = "application/json"
    response = Response(content, status_code=status, headers=headers)
    for cookie in value.get("cookies") or []:
        response.raw_headers.append((b"set-cookie", str(cookie).encode("latin-1")))
    return response


def _set_request_id(response: Response, request_id: str) -> None:
    """``x-amzn-RequestId``, replacing a value the handler set (appending to the raw
    headers costs a third of ``response.headers[...] = ...``, once per request)."""
    raw = response.raw_headers
    if any(name == b"x-amzn-requestid" for name, _ in raw):
        response.headers["x-amzn-RequestId"] = request_id
    else:
        raw.append((b"x-amzn-requestid", request_id.encode("latin-1")))


async def _body_within(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    declared = header(scope, b"content-length") or ""
    return await read_body(receive, limit, int(declared) if declared.isdigit() else None)


class HttpSource:
    """Mounts one function URL route; ``serve`` only registers it and waits."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        cfg = spec.config
        self.path: str = cfg.path
        self.methods: tuple[str, ...] = tuple(m.upper() for m in cfg.methods)
        self.auth = cfg.auth != "none"
        self.cors = getattr(cfg, "cors", None)
        self.v1 = getattr(cfg, "payload_format", "2.0") == "1.0"
        self.stage: str = getattr(cfg, "stage", "$default")

    async def serve(
        self, ctx: SourceContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async def respond(scope: Scope, receive: Receive) -> Response:
            body = await _body_within(scope, receive, 6 * 1024 * 1024)
            if body is None:
                return JSONResponse({"Message": "Request Entity Too Large"}, status_code=413)
            if self.v1:
                text = _is_text(header(scope, b"content-type") or "")
                event = event_v1(
                    scope,
                    body,
                    resource=self.path,
                    stage=self.stage,
                    is_text=text,
                    token_auth=self.auth,
                )
            else:
                event = _event(scope, body, self.auth)
            try:
                outcome = await ctx.invoke(event)
            except FunctionSaturated:
                return JSONResponse({"Message": "Too Many Requests"}, status_code=429)
            if not outcome.ok:
                response: Response = (
                    bad_gateway_v1()
                    if self.v1
                    else JSONResponse({"Message": "Internal Server Error"}, status_code=502)
                )
            elif self.v1:
                response = map_response_v1(outcome.payload)
            else:
                response = map_response(outcome.payload)
            _set_request_id(response, outcome.request_id)
            self._cors_headers(header(scope, b"origin"), response)
            return response

        async def endpoint(request: Request) -> Response:
            return await respond(request.scope, request.receive)

        if self.cors is not None:
            # browsers send preflights without credentials: answered before auth, and
            # mounted first so it wins over a ``methods: ["*"]`` route on the same path
            async def preflight(request: Request) -> Response:
                return self._preflight(request)

            ctx.add_route(Route(self.path, ("OPTIONS",), preflight, auth=False))
        ctx.add_route(Route(self.path, self.methods, endpoint, auth=self.auth, respond=respond))
        task_status.started()
        await anyio.sleep_forever()

    def _allowed_origin(self, origin: str | None) -> str | None:
        if origin is None or self.cors is None:
            return None
        allowed = list(self.cors.allow_origins or [])
        if "*" in allowed:
            return "*"
        return origin if origin in allowed else None

    def _cors_headers(self, request_origin: str | None, response: Response) -> None:
        origin = self._allowed_origin(request_origin)
        if origin is None or self.cors is None:
            return
        response.headers["access-control-allow-origin"] = origin
        if origin != "*":
            response.headers["vary"] = "Origin"
        if self.cors.allow_credentials:
            response.headers["access-control-allow-credentials"] = "true"
        if self.cors.expose_headers:
            response.headers["access-control-expose-headers"] = ",".join(self.cors.expose_headers)

    def _preflight(self, request: Request) -> Response:
        response = Response(status_code=200)
        self._cors_headers(request.headers.get("origin"), response)
        assert self.cors is not None
        if self.cors.allow_methods:
            response.headers["access-control-allow-methods"] = ",".join(self.cors.allow_methods)
        if self.cors.allow_headers:
            response.headers["access-control-allow-headers"] = ",".join(self.cors.allow_headers)
        if self.cors.max_age:
            response.headers["access-control-max-age"] = str(int(self.cors.max_age))
        return response
