"""The daemon's one HTTP server (Starlette on uvicorn): the Lambda Invoke API, function
URLs mounted by ``http`` triggers, health, readiness, Prometheus metrics, the JSON status
API and an OpenAPI document.

Auth: bearer tokens from the environment variable ``server.auth.tokens_env``
(comma-separated), compared in constant time. With ``auth.mode: token`` and no tokens
configured, the server only starts on a loopback address (and says so in the log); the
config layer already refuses ``auth.mode: none`` on a non-loopback address. Health and
readiness are always open; everything that invokes code or shows state needs a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import anyio
import structlog
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from eventrun._openapi import openapi_document
from eventrun.exceptions import ConfigError, FunctionSaturated

if TYPE_CHECKING:
    from eventrun._runtime import Runtime

__all__ = ["build_app", "serve_api"]

log = structlog.get_logger("eventrun.api")

SYNC_LIMIT = 6 * 1024 * 1024
ASYNC_LIMIT = 1024 * 1024
TAIL_BYTES = 4096
Endpoint = Callable[[Request], Awaitable[Response]]


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def load_tokens(runtime: Runtime) -> list[bytes]:
    auth = runtime.config.server.auth
    if auth.mode == "none":
        return []
    raw = os.environ.get(auth.tokens_env or "", "") if auth.tokens_env else ""
    tokens = [t.strip().encode() for t in raw.split(",") if t.strip()]
    host = runtime.config.server.host
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"server.auth: no bearer tokens in ${auth.tokens_env} while server.host is "
            f"{host} (not loopback); set {auth.tokens_env}=TOKEN[,TOKEN...] or bind 127.0.0.1"
        )
    if not tokens:
        log.warning("server.auth_disabled", reason="no tokens configured; loopback only")
    return tokens


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    body = {"Type": "User", "message": message, **extra}
    return JSONResponse(body, status_code=status, headers={"x-amzn-ErrorType": kind})


def _function_name(raw: str) -> str:
    """``name``, ``name:qualifier`` or a full ARN -> ``name``."""
    if raw.startswith("arn:"):
        parts = raw.split(":")
        return parts[6] if len(parts) > 6 else raw
    return raw.split(":", 1)[0]


class _Auth:
    def __init__(self, tokens: list[bytes]) -> None:
        self._tokens = tokens

    def ok(self, request: Request) -> bool:
        if not self._tokens:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        given = presented.strip().encode()
        # compare against every token so timing does not reveal which one matched
        return any([hmac.compare_digest(given, t) for t in self._tokens])

    def guard(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not self.ok(request):
                return JSONResponse(
                    {"message": "missing or invalid bearer token"},
                    status_code=401,
                    headers={
                        "WWW-Authenticate": "Bearer",
                        "x-amzn-ErrorType": "UnauthorizedException",
                    },
                )
            return await endpoint(request)

        return guarded


def build_app(runtime: Runtime) -> Starlette:
    """The ASGI app for a runtime whose push sources already registered their routes."""
    auth = _Auth(load_tokens(runtime))

    async def invoke(request: Request) -> Response:
        name = _function_name(request.path_params["name"])
        if name not in runtime.functions:
            return _error(
                404,
                "ResourceNotFoundException",
                f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}",
            )
        kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
        body = await request.body()
        if kind == "DryRun":
            return Response(status_code=204)
        if kind == "Event":
            if len(body) > ASYNC_LIMIT:
                return _too_large(len(body), ASYNC_LIMIT)
            if not _is_json(body):
                return _error(
                    400, "InvalidRequestContentException", "Could not parse request body into json"
                )
            rid = await runtime.enqueue(name, body or b"{}")
            return Response(status_code=202, headers={"x-amzn-RequestId": rid})
        if kind != "RequestResponse":
            return _error(
                400,
                "InvalidParameterValueException",
                f"X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, got {kind!r}",
            )
        if len(body) > SYNC_LIMIT:
            return _too_large(len(body), SYNC_LIMIT)
        if body and not _is_json(body):
            return _error(
                400, "InvalidRequestContentException", "Could not parse request body into json"
            )
        try:
            result = await runtime.invoke(
                name,
                body or b"{}",
                wait=False,
                client_context=_client_context(request.headers.get("x-amz-client-context")),
            )
        except FunctionSaturated:
            return _error(
                429,
                "TooManyRequestsException",
                "Rate Exceeded.",
                Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": result.request_id}
        if not result.ok:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if request.headers.get("x-amz-log-type", "").lower() == "tail":
            tail = result.logs.encode()[-TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        return Response(
            result.payload, status_code=200, headers=headers, media_type="application/json"
        )

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
        from eventrun._metrics import render_metrics

        body, content_type = render_metrics(runtime)
        return Response(body, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(runtime))

    routes = [
        StarletteRoute(
            "/2015-03-31/functions/{name}/invocations", auth.guard(invoke), methods=["POST"]
        ),
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/readyz", readyz, methods=["GET"]),
        StarletteRoute("/metrics", auth.guard(metrics), methods=["GET"]),
        StarletteRoute("/status", auth.guard(status), methods=["GET"]),
        StarletteRoute("/openapi.json", openapi, methods=["GET"]),
    ]
    for route in runtime.routes:
        endpoint = auth.guard(route.endpoint) if route.auth else route.endpoint
        methods = None if "*" in route.methods else list(route.methods)
        routes.append(StarletteRoute(route.path, endpoint, methods=methods))
    return Starlette(routes=routes)


def _too_large(size: int, limit: int) -> JSONResponse:
    return _error(
        413,
        "RequestEntityTooLargeException",
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
        size=size,
    )


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _client_context(header: str | None) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        value = json.loads(base64.b64decode(header))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime's stop event drives shutdown."""

    def capture_signals(self) -> Any:
        return nullcontext()


async def serve_api(
    runtime: Runtime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; ``runtime.bound_port`` holds the port once started."""
    server_cfg = runtime.config.server
    app = build_app(runtime)
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
    runtime.bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
        timeout_keep_alive=30,
        limit_concurrency=2048,
        h11_max_incomplete_event_size=64 * 1024,
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
        while not server.started and not stopped.is_set():
            await anyio.sleep(0.005)
        log.info("server.listening", host=server_cfg.host, port=runtime.bound_port)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await stopped.wait()
            sock.close()
