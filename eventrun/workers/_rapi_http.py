"""The HTTP/1.1 underneath a Runtime API endpoint: h11 on an anyio loopback listener.

One small server per runtime process, so nothing of the daemon's web stack (starlette,
uvicorn) reaches the workers layer. What Runtime API clients need of HTTP and this
gives them: keep-alive (the C++ client of the Node and Python interface clients keeps
one connection), ``Content-Length`` and ``Transfer-Encoding: chunked`` request bodies,
trailers (Go's client sends every POST chunked), and a body-size cap that still reads
the whole body so the connection stays usable (a 413 is an answer, not a hang-up).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import h11
from anyio.abc import SocketStream

__all__ = ["Request", "Response", "serve_connection"]

_READ = 65536


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case; trailers merged in (a chunked body's trailers)."""
    body: bytes
    too_large: bool = False
    """The body was over the limit: ``body`` holds only its start."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    content_type: str = "application/json"


Route = Callable[[Request], Awaitable[Response]]


async def serve_connection(stream: SocketStream, route: Route, *, body_limit: int) -> None:
    """Answer the requests of one connection, in order, until the client closes it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    async with stream:
        try:
            while True:
                request = await _read_request(conn, stream, body_limit)
                if request is None:
                    return
                response = await route(request)
                await _write_response(conn, stream, response)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        except OSError:
            return


async def _next_event(conn: h11.Connection, stream: SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(_READ)
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)


async def _read_request(
    conn: h11.Connection, stream: SocketStream, body_limit: int
) -> Request | None:
    event = await _next_event(conn, stream)
    if not isinstance(event, h11.Request):
        return None  # ConnectionClosed (or garbage h11 already rejected)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
    chunks: list[bytes] = []
    size = 0
    while True:
        part = await _next_event(conn, stream)
        if isinstance(part, h11.Data):
            size += len(part.data)
            if size <= body_limit:
                chunks.append(bytes(part.data))
        elif isinstance(part, h11.EndOfMessage):
            for k, v in part.headers:  # trailers
                headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
            break
        else:
            return None
    path = event.target.decode("latin-1").split("?", 1)[0]
    return Request(event.method.decode("ascii"), path, headers, b"".join(chunks), size > body_limit)


async def _write_response(conn: h11.Connection, stream: SocketStream, response: Response) -> None:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    out = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if response.body:
        out += conn.send(h11.Data(data=response.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send(out)
