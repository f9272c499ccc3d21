"""The daemon's one HTTP server (Starlette on uvicorn): the Lambda Invoke API, function
URLs mounted by ``http`` triggers, health, readiness, Prometheus metrics, the JSON status
API and an OpenAPI document.

Auth: bearer tokens from the environment variable ``server.auth.tokens_env``
(comma-separated), compared in constant time. With ``auth.mode: token`` and no tokens
configured, the server only starts on a loopback address (and says so in the log); the
config layer already refuses ``auth.mode: none`` on a non-loopback address. Health and
readiness are always open; everything that invokes code or shows state needs a token.
The status page's session cookie counts for the admin routes only (:meth:`_Auth.guard_admin`,
which also refuses cross-site writes); the Invoke API refuses another site's ``Origin``;
:class:`eventrun.server._fastpath.FastApp` answers a ``Host`` outside ``server.allowed_hosts``
with 421. The threat model is docs/security.md.

Why this module is over 400 lines: it builds the one app (routes, auth, health, metrics) and
serves it (socket, guards, uvicorn); the status page, DLQ API, OpenAPI, fast path and
protocol are modules of their own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope

from eventrun.asgi import JSONBytesResponse, first_headers, header, read_body
from eventrun.common import one_line
from eventrun.config import is_loopback
from eventrun.exceptions import ConfigError, FunctionSaturated, QueueFull, StoreError
from eventrun.observe import attached
from eventrun.server._dlq_api import dlq_routes
from eventrun.server._fastpath import FastApp, Responder
from eventrun.server._guards import (
    LoginLimiter,
    Sessions,
    admin_write_refusal,
    allowed_hosts,
    cross_origin,
)
from eventrun.server._httpguard import HttpLimits, guarded_protocol
from eventrun.server._openapi import openapi_document
from eventrun.server._web import session_cookie, web_routes

if TYPE_CHECKING:
    from eventrun.server._view import ServedRuntime

_GREEDY = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\+\}")
"""A greedy path parameter, ``{proxy+}``: one or more whole segments."""

__all__ = ["build_app", "serve_api"]

log = structlog.get_logger("eventrun.server._api")

SYNC_LIMIT = 6 * 1024 * 1024
ASYNC_LIMIT = 1024 * 1024
TAIL_BYTES = 4096
MIN_TOKEN_LENGTH = 16
ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
Endpoint = Callable[[Request], Awaitable[Response]]


def load_tokens(runtime: ServedRuntime, *, warn: bool = True) -> list[bytes]:
    """The accepted bearer tokens; raises ConfigError when there are none and the server
    binds a non-loopback address (the Invoke API must never be open to the network)."""
    auth = runtime.config.server.auth
    if auth.mode == "none":
        return []
    raw = os.environ.get(auth.tokens_env or "", "") if auth.tokens_env else ""
    tokens = [t.strip().encode() for t in raw.split(",") if t.strip()]
    host = runtime.config.server.host
    short = [t for t in tokens if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ConfigError(
            f"server.auth: {len(short)} of the tokens in ${auth.tokens_env} "
            f"{'is' if len(short) == 1 else 'are'} shorter than {MIN_TOKEN_LENGTH} characters; "
            "use long random tokens (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)"
        )
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"server.auth: no bearer tokens in ${auth.tokens_env} while server.host is "
            f"{host} (not loopback); set {auth.tokens_env}=TOKEN[,TOKEN...] or bind 127.0.0.1"
        )
    if not tokens and warn:
        log.warning("server.auth_disabled", reason="no tokens configured; loopback only")
    return tokens


# Lambda's model spells the message member ``Message`` for these errors, ``message`` for
# the rest; botocore fills the exception's fields from the member names of its shape.
_CAPITAL_MESSAGE = frozenset({"ResourceNotFoundException", "ServiceException"})


def _error(
    status: int,
    kind: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A Lambda service error: the code in ``x-amzn-ErrorType`` (what botocore's rest-json
    parser reads), ``{"Type": "User", "message"|"Message": ...}`` in the body."""
    key = "Message" if kind in _CAPITAL_MESSAGE else "message"
    body = {"Type": "User", key: one_line(message), **extra}
    return JSONResponse(
        body, status_code=status, headers={"x-amzn-ErrorType": kind, **(headers or {})}
    )


def _function_name(raw: str) -> str:
    """``name``, ``name:qualifier`` or a full ARN -> ``name``."""
    if raw.startswith("arn:"):
        parts = raw.split(":")
        return parts[6] if len(parts) > 6 else raw
    return raw.split(":", 1)[0]


class _Auth:
    """Bearer tokens for every guarded route; the status page's session cookie
    (:class:`eventrun.server._guards.Sessions`) for the admin routes only (``cookie=True``): the
    Invoke API and function URLs never accept it."""

    def __init__(self, tokens: list[bytes]) -> None:
        self._tokens = tokens
        self.sessions = Sessions(tokens)
        self.logins = LoginLimiter()

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def valid_token(self, given: bytes) -> bool:
        # compare against every token so timing does not reveal which one matched
        return any([hmac.compare_digest(given, t) for t in self._tokens])  # noqa: C419

    def ok(self, request: Request, *, cookie: bool = True) -> bool:
        return self.allows(request.scope, cookie=cookie)

    def allows(self, scope: Scope, *, cookie: bool = False) -> bool:
        """Whether a request (its ASGI scope) carries a valid token, or (``cookie``) a
        valid session cookie."""
        if not self._tokens:
            return True
        presented = _bearer(scope)
        if presented is None:
            return cookie and self.session_ok(scope)
        return self.valid_token(presented)

    def session_ok(self, scope: Scope) -> bool:
        value = session_cookie(scope)
        return value is not None and self.sessions.valid(value)

    def guard(self, endpoint: Endpoint, *, cookie: bool = False) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not self.ok(request, cookie=cookie):
                return _unauthorized()
            return await endpoint(request)

        return guarded

    def guard_admin(self, endpoint: Endpoint) -> Endpoint:
        """:meth:`guard` for an admin route: token or session cookie, and a request that
        changes state must pass :func:`eventrun.server._guards.admin_write_refusal`."""
        guarded = self.guard(endpoint, cookie=True)

        async def checked(request: Request) -> Response:
            if request.method not in ("GET", "HEAD"):
                refusal = admin_write_refusal(first_headers(request.scope))
                if refusal is not None:
                    return forbidden(refusal)
            return await guarded(request)

        return checked

    def guard_responder(self, respond: Responder) -> Responder:
        """:meth:`guard` for a fast-path responder (eventrun.server._fastpath)."""

        async def guarded(scope: Scope, receive: Receive) -> Response:
            if not self.allows(scope):
                return _unauthorized()
            return await respond(scope, receive)

        return guarded


def _bearer(scope: Scope) -> bytes | None:
    """The token of an ``Authorization: Bearer`` header; None without one."""
    raw = header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, presented = raw.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return b""  # present but not a bearer token: refused, never a cookie fallback
    return presented.strip().encode("latin-1")


def forbidden(message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=403)


def _unauthorized() -> Response:
    return JSONResponse(
        {"message": "missing or invalid bearer token"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer", "x-amzn-ErrorType": "UnauthorizedException"},
    )


def build_app(runtime: ServedRuntime, *, port: int | None = None) -> Starlette:
    """The ASGI app for a runtime whose push sources already registered their routes;
    ``port`` (default: the runtime's) is the one accepted in ``Host`` headers."""
    auth = _Auth(load_tokens(runtime))

    async def respond_invoke(scope: Scope, receive: Receive) -> Response:
        with attached(scope["headers"]):  # the caller's traceparent, when tracing
            return await _invoke(runtime, scope, receive)

    async def invoke(request: Request) -> Response:
        return await respond_invoke(request.scope, request.receive)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = runtime.ready.is_set()
        pending = sorted(n for n, s in runtime.sources.items() if not s.started)
        return JSONResponse(
            {"ready": ready, "waiting_for": pending}, status_code=200 if ready else 503
        )

    async def status(request: Request) -> Response:
        return JSONResponse(runtime.statistics())

    async def metrics(request: Request) -> Response:
        from eventrun.observe import render_metrics

        body, content_type = render_metrics(runtime.metrics)
        return Response(body, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(runtime))

    invoke_route = StarletteRoute(
        "/2015-03-31/functions/{name}/invocations", auth.guard(invoke), methods=["POST"]
    )
    # routes answered by a responder without Starlette's middleware (eventrun.server._fastpath)
    responders: dict[int, Responder] = {id(invoke_route): auth.guard_responder(respond_invoke)}
    routes = [
        invoke_route,
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", readyz, methods=["GET"]),
        StarletteRoute("/metrics", auth.guard_admin(metrics), methods=["GET"]),
        StarletteRoute("/status", auth.guard_admin(status), methods=["GET"]),
        StarletteRoute("/openapi.json", auth.guard_admin(openapi), methods=["GET"]),
    ]
    greedy: list[StarletteRoute] = []
    for route in runtime.routes:
        endpoint = auth.guard(route.endpoint) if route.auth else route.endpoint
        # Starlette treats methods=None on a function endpoint as GET only: spell "*" out
        methods = list(ANY_METHOD) if "*" in route.methods else list(route.methods)
        path = _GREEDY.sub(r"{\1:path}", route.path)
        mounted = StarletteRoute(path, endpoint, methods=methods)
        if route.respond is not None:
            respond: Responder = route.respond
            responders[id(mounted)] = auth.guard_responder(respond) if route.auth else respond
        (greedy if path != route.path else routes).append(mounted)
    # after the function URLs, so a function mounted at / or /dlq keeps its path
    routes.extend(dlq_routes(runtime, auth))
    routes.extend(web_routes(runtime, auth))
    # greedy {name+} routes (API Gateway's {proxy+}) last, the longest literal prefix
    # first, as API Gateway prefers the most specific route
    routes.extend(sorted(greedy, key=lambda r: -len(r.path.split("{", 1)[0])))
    server = runtime.config.server
    if port is None:
        port = runtime.bound_port if runtime.bound_port is not None else runtime.port
    return FastApp(routes, responders, hosts=allowed_hosts(server.host, port, server.allowed_hosts))


_NOT_JSON = "Could not parse request body into json"


async def _invoke(runtime: ServedRuntime, scope: Scope, receive: Receive) -> Response:
    """``POST /2015-03-31/functions/{name}/invocations``: Lambda's status codes and headers
    (from the ASGI scope: this runs once per invocation, see eventrun.server._fastpath)."""
    headers = first_headers(scope)
    origin = headers.get(b"origin")  # boto3, the AWS CLI, curl: none
    if origin is not None and cross_origin(origin, headers.get(b"host")):
        # a browser page of another site (no CORS here: its preflights get 405 anyway)
        return _error(403, "AccessDeniedException", "cross-origin requests are refused")
    name = _function_name(scope["path_params"]["name"])
    if name not in runtime.functions:
        return _error(
            404,
            "ResourceNotFoundException",
            f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}",
        )
    kind = headers.get(b"x-amz-invocation-type", b"RequestResponse").decode("latin-1")
    limit = ASYNC_LIMIT if kind == "Event" else SYNC_LIMIT
    declared = _declared_length(headers)
    body = await read_body(receive, limit, declared)
    if body is None:
        return _too_large(declared or limit + 1, limit)
    if kind == "DryRun":
        return Response(status_code=204)
    if kind == "Event":  # read_body above kept the body within this kind's limit
        if body and not _is_json(body):
            return _error(400, "InvalidRequestContentException", _NOT_JSON)
        try:
            rid = await runtime.enqueue(name, body or b"{}")
        except QueueFull as exc:  # the async queue is at a cap: nothing was queued
            return _error(429, "TooManyRequestsException", str(exc), headers={"Retry-After": "1"})
        except StoreError as exc:  # e.g. a full disk: nothing was queued, nothing accepted
            return _error(
                503,
                "ServiceException",
                f"the invocation could not be queued: {exc}",
                headers={"Retry-After": "1"},
                Type="Service",
            )
        return Response(status_code=202, headers={"x-amzn-RequestId": rid})
    if kind != "RequestResponse":
        return _error(
            400,
            "InvalidParameterValueException",
            f"X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, got {kind!r}",
        )
    if body and not _is_json(body):
        return _error(400, "InvalidRequestContentException", _NOT_JSON)
    return await _invoke_sync(runtime, headers, name, body or b"{}")


async def _invoke_sync(
    runtime: ServedRuntime, headers: dict[bytes, bytes], name: str, body: bytes
) -> Response:
    context = headers.get(b"x-amz-client-context")
    try:
        result = await runtime.invoke(
            name,
            body,
            wait=False,
            client_context=_client_context(context.decode("latin-1") if context else None),
        )
    except FunctionSaturated:
        return _error(
            429,
            "TooManyRequestsException",
            "Rate Exceeded.",
            headers={"Retry-After": "1"},
            Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
        )
    response = JSONBytesResponse(result.payload)
    # raw (lower-case) header pairs: a third of the cost of a headers mapping
    out = response.raw_headers
    out.append((b"x-amz-executed-version", b"$LATEST"))
    out.append((b"x-amzn-requestid", result.request_id.encode("latin-1")))
    if not result.ok:
        out.append((b"x-amz-function-error", b"Unhandled"))
    if headers.get(b"x-amz-log-type", b"").lower() == b"tail":
        tail = result.logs.encode()[-TAIL_BYTES:]
        out.append((b"x-amz-log-result", base64.b64encode(tail)))
    return response


def _declared_length(headers: dict[bytes, bytes]) -> int | None:
    try:
        return int(headers[b"content-length"])
    except (KeyError, ValueError):
        return None


def _too_large(size: int, limit: int) -> JSONResponse:
    return _error(
        413,
        "RequestTooLargeException",
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
        size=size,
    )


def _is_json(body: bytes) -> bool:
    """Whether Lambda would take ``body`` as JSON. Nesting deeper than Python's recursion
    limit (about 1000 levels) is refused, as Lambda's parser refuses deep nesting; it would
    raise RecursionError here and in the handler's runtime."""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        try:  # what msgspec refuses and Python's json (Lambda's parser) takes: NaN...
            json.loads(body)
        except (ValueError, RecursionError):
            return False
    except RecursionError:
        return False
    return True


def _client_context(header: str | None) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        value = json.loads(base64.b64decode(header))
    except (ValueError, binascii.Error, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime's stop event drives shutdown."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = anyio.Event()

    def capture_signals(self) -> Any:
        return nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.started_event.set()


async def serve_api(
    runtime: ServedRuntime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; ``runtime.bound_port`` holds the port once started."""
    server_cfg = runtime.config.server
    family = socket.AF_INET6 if ":" in server_cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((server_cfg.host, runtime.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"server: cannot listen on {server_cfg.host}:{runtime.port}: {exc.strerror}"
        ) from exc
    sock.listen(1024)
    sock.setblocking(False)
    try:
        app = build_app(runtime, port=sock.getsockname()[1])  # the Host check needs the port
    except BaseException:
        sock.close()
        raise
    runtime.bound_port = sock.getsockname()[1]
    trusted = ",".join(server_cfg.forwarded_allow_ips)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=guarded_protocol(
            HttpLimits(
                head_timeout_s=server_cfg.request_head_timeout,
                keep_alive_s=int(server_cfg.keep_alive_timeout),
                max_head_bytes=server_cfg.max_request_head_bytes,
                max_headers=server_cfg.max_request_headers,
                max_per_client=server_cfg.max_connections_per_client,
            )
        ),
        server_header=False,  # no "server: uvicorn": nothing to fingerprint, one header less
        # X-Forwarded-For/-Proto only from the configured proxies (uvicorn would trust
        # 127.0.0.1 by default: any local process could spoof sourceIp and https)
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        timeout_keep_alive=int(server_cfg.keep_alive_timeout),
        limit_concurrency=server_cfg.max_connections,
    )
    server = _Server(config)
    stopped = anyio.Event()

    async def _serve() -> None:
        try:
            # shielded: the server stops through should_exit, so it can close connections
            with anyio.CancelScope(shield=True):
                await server.serve([sock])
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve)
        async with anyio.create_task_group() as first:  # started, or failed to start

            async def _wait(event: anyio.Event) -> None:
                await event.wait()
                first.cancel_scope.cancel()

            first.start_soon(_wait, server.started_event)
            first.start_soon(_wait, stopped)
        log.info("server.listening", host=server_cfg.host, port=runtime.bound_port)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await stopped.wait()
            sock.close()
