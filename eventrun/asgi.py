"""ASGI helpers for HTTP push sources (part of the plugin seam) and the daemon's routes.

Hot routes answer from the raw ASGI scope (see :mod:`eventrun._fastpath`); these read it
the way Starlette's ``Request`` would, without building one. :func:`new_request_id`
gives an event its ``requestContext.requestId`` (``str(uuid.uuid4())``, cheaper).
"""

from __future__ import annotations

from starlette.types import Receive, Scope

from eventrun._ids import new_request_id

__all__ = ["first_headers", "header", "new_request_id", "read_body"]


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
