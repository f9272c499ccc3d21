"""One runtime process's Lambda Runtime API: the routes and the state machine behind them.

States, as AWS's own implementation names them (aws-lambda-runtime-interface-emulator,
``internal/lambda/core``): ``started`` (process spawned, initialising) -> ``ready`` (it
called ``/next`` and waits for an event) -> ``running`` (an invocation is in flight) ->
``sent`` (its response or error was posted) -> ``ready`` again at the next ``/next``.
``/init/error`` in ``started`` leads to ``init_error``, from which nothing else is allowed.

Answers, as the emulator gives them:

* ``GET  /2018-06-01/runtime/invocation/next`` blocks until an invocation is handed over,
  then 200 with the event and the ``Lambda-Runtime-*`` headers; 403
  ``InvalidStateTransition`` while an invocation is unanswered or after an init error;
* ``POST .../invocation/{id}/response`` and ``.../error``: 202 ``{"status":"OK"}``;
  400 ``InvalidRequestID`` for an id that is not the one in flight (or already
  answered); 403 ``InvalidStateTransition`` when no invocation was ever handed over;
  413 ``RequestEntityTooLarge`` for a response over 6 MB, whose caller then gets
  ``Function.ResponseSizeTooLarge``;
* ``POST /2018-06-01/runtime/init/error``: 202 in ``started``, 403 otherwise.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from ._rapi_http import Request, Response

__all__ = ["MAX_PAYLOAD", "Endpoint", "Invocation"]

MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous response quota (6 MB)
_PREFIX = "/2018-06-01/runtime/"
_INVOCATION = re.compile(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)")
_ACCEPTED = Response(202, b'{"status":"OK"}')
_MODE = "lambda-runtime-function-response-mode"
_HTTP_PRELUDE = "application/vnd.awslambda.http-integration-response"
_DELIMITER = b"\x00" * 8


@dataclass(slots=True, eq=False)
class Invocation:
    """One event handed to the runtime, and its answer once posted."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    client_context: str | None = None
    identity: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    body: bytes = b""
    error_type: str | None = None
    answered: bool = False
    taken: bool = False
    """A ``/next`` handed it to the runtime."""


def _error(status: int, error_type: str, message: str) -> Response:
    return Response(status, json.dumps({"errorMessage": message, "errorType": error_type}).encode())


def _invalid_id() -> Response:
    return _error(400, "InvalidRequestID", "Invalid request ID")


def error_type_of(body: bytes, header: str | None) -> str:
    """The error's type: the body's ``errorType``, else the
    ``Lambda-Runtime-Function-Error-Type`` header, else ``Unhandled``."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errorType"), str) and doc["errorType"]:
        return str(doc["errorType"])
    return header or "Unhandled"


def error_body(body: bytes, error_type: str) -> bytes:
    """The error JSON a caller gets: the posted body when it is a JSON object, else one
    built around it."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return body
    message = body.decode("utf-8", "replace")
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def streamed(invocation: Invocation, request: Request) -> None:
    """A streamed response (``Lambda-Runtime-Function-Response-Mode: streaming``), read
    whole: an error in its trailers (``Lambda-Runtime-Function-Error-Type`` / ``-Body``,
    base64) fails the invocation; an HTTP-integration prelude (JSON, then 8 NUL bytes)
    becomes the function URL result ``{statusCode, headers, cookies, body}``."""
    error_type = request.headers.get("lambda-runtime-function-error-type")
    if error_type:
        try:
            body = base64.b64decode(request.headers.get("lambda-runtime-function-error-body", ""))
        except ValueError:
            body = b""
        invocation.ok, invocation.error_type = False, error_type_of(body, error_type)
        invocation.body = error_body(body, invocation.error_type)
        return
    invocation.ok, invocation.body = True, request.body
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(_HTTP_PRELUDE) and _DELIMITER in request.body:
        head, _, rest = request.body.partition(_DELIMITER)
        try:
            prelude = json.loads(head)
        except ValueError:
            return
        if isinstance(prelude, dict):
            result = {
                "statusCode": prelude.get("statusCode", 200),
                "headers": prelude.get("headers") or {},
                "cookies": prelude.get("cookies") or [],
                "body": base64.b64encode(rest).decode("ascii"),
                "isBase64Encoded": True,
            }
            invocation.body = json.dumps(result).encode()


class Endpoint:
    """The Runtime API of one runtime process (one invocation at a time, like Lambda)."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.state = "started"
        self.current: Invocation | None = None
        self.init_error: tuple[str, bytes] | None = None
        self.init_done = anyio.Event()
        """Set at the first ``/next``, at ``/init/error``, or when the process exits."""
        self._on_ready = on_ready
        self._send, self._receive = anyio.create_memory_object_stream[Invocation](1)

    def deliver(self, invocation: Invocation) -> None:
        """Hand an invocation to the runtime's (pending or next) ``/next``."""
        self._send.send_nowait(invocation)

    def abort(self) -> None:
        """The process is gone: wake whoever waits on it, including an invocation handed
        over that no ``/next`` took (the process died between two invocations)."""
        self.init_done.set()
        if self.current is not None:
            self.current.done.set()
        self._send.close()
        while True:
            try:
                self._receive.receive_nowait().done.set()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._receive.close()

    async def route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == _PREFIX + "invocation/next":
            return await self._next() if method == "GET" else _error(405, "MethodNotAllowed", "")
        if method != "POST":
            return _error(405, "MethodNotAllowed", f"{method} {path}")
        if path == _PREFIX + "init/error":
            return self._post_init_error(request)
        match = _INVOCATION.fullmatch(path)
        if match is None:
            return Response(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")
        return self._post_result(request, match.group(1), match.group(2) == "response")

    async def _next(self) -> Response:
        if self.state not in ("started", "sent", "ready"):
            return self._forbidden("Ready")
        self.state = "ready"
        if not self.init_done.is_set():
            self.init_done.set()
            self._on_ready()
        try:
            invocation = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return _error(500, "InternalServerError", "the runtime is being shut down")
        self.state = "running"
        self.current = invocation
        invocation.taken = True
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", invocation.function_arn),
            ("Lambda-Runtime-Trace-Id", invocation.trace_id),
        ]
        if invocation.client_context is not None:
            headers.append(("Lambda-Runtime-Client-Context", invocation.client_context))
        if invocation.identity is not None:
            headers.append(("Lambda-Runtime-Cognito-Identity", invocation.identity))
        return Response(200, invocation.payload, headers)

    def _post_result(self, request: Request, rid: str, success: bool) -> Response:
        current = self.current
        if self.state in ("started", "ready", "init_error") and current is None:
            return self._forbidden("InvocationResponse" if success else "InvocationErrorResponse")
        if current is None or current.request_id != rid or current.answered:
            return _invalid_id()
        current.answered = True
        self.state = "sent"
        if request.too_large:
            current.ok, current.error_type = False, "Function.ResponseSizeTooLarge"
            current.body = json.dumps(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload "
                    f"size ({MAX_PAYLOAD} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge",
                }
            ).encode()
            current.done.set()
            return _error(
                413,
                "RequestEntityTooLarge",
                f"Exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).",
            )
        if success and request.headers.get(_MODE) == "streaming":
            streamed(current, request)
        elif success:
            current.ok, current.body = True, request.body
        else:
            header = request.headers.get("lambda-runtime-function-error-type")
            current.error_type = error_type_of(request.body, header)
            current.body = error_body(request.body, current.error_type)
        current.done.set()
        return _ACCEPTED

    def _post_init_error(self, request: Request) -> Response:
        if self.state != "started":
            return self._forbidden("InitError")
        header = request.headers.get("lambda-runtime-function-error-type")
        error_type = error_type_of(request.body, header)
        self.init_error = (error_type, error_body(request.body, error_type))
        self.state = "init_error"
        self.init_done.set()
        return _ACCEPTED

    def _forbidden(self, target: str) -> Response:
        return _error(
            403,
            "InvalidStateTransition",
            f"State transition from {self.state} to {target} failed for runtime.",
        )
