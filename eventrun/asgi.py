"""ASGI helpers for HTTP push sources (part of the plugin seam) and the daemon's routes.

Hot routes answer from the raw ASGI scope (see :mod:`eventrun.server._fastpath`); these read it
the way Starlette's ``Request`` would, without building one. :func:`new_request_id`
gives an event its ``requestContext.requestId`` (``str(uuid.uuid4())``, cheaper);
:class:`JSONBytesResponse` answers with JSON bytes a handler already returned.
:data:`SESSION_COOKIE` names the status page's cookie, which function URLs drop.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope

from eventrun.common import new_request_id

__all__ = [
    "SESSION_COOKIE",
    "JSONBytesResponse",
    "first_headers",
    "header",
    "new_request_id",
    "read_body",
]

SESSION_COOKIE = "eventrun_session"
"""The status page's session cookie (eventrun.server._web): never passed to a function URL."""


class JSONBytesResponse(Response):
    """200, ``application/json``, a body that is JSON already: the same response as
    ``Response(body, media_type="application/json")``, built in a quarter of the time
    (0.3 us instead of 1.2; the Invoke API and function URLs build one per request).
    Add headers to ``raw_headers`` as lower-case byte pairs, or through ``headers``."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """Header name -> its first value, for a caller that reads several headers."""
    raw = scope["headers"]
    return dict(reversed(raw if isinstance(raw, list) else list(raw)))


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as ``request.headers.get`` gives."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive, limit: int, declared: int | None = None) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit``: from the
    declared Content-Length before reading anything (a huge body is never waited for),
    or while streaming. A client that disconnects mid-body gets whatever arrived (its
    response goes nowhere). Reads the ASGI messages as ``request.stream()`` does."""
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            break
    return b"".join(chunks)
