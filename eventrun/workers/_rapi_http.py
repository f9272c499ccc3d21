"""The HTTP/1.1 underneath a Runtime API endpoint: httptools on an anyio loopback listener.

One small server per runtime process, so nothing of the daemon's web stack (starlette,
uvicorn) reaches the workers layer. What Runtime API clients need of HTTP and this
gives them: keep-alive (the C++ client of the Node and Python interface clients keeps
one connection), ``Content-Length`` and ``Transfer-Encoding: chunked`` request bodies,
trailers (Go's client sends every POST chunked; Node's streamed responses carry their
error in trailers), and a body-size cap that still reads the whole body so the
connection stays usable (a 413 is an answer, not a hang-up). httptools (llhttp, C) was
chosen over h11 for the warm path: h11 cost about 100 us per request on the bench machine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import anyio
import httptools
from anyio.abc import SocketStream

__all__ = ["Request", "Response", "serve_connection"]

_READ = 65536
_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case; trailers merged in (a chunked body's trailers)."""
    body: bytes
    too_large: bool = False
    """The body was over the limit: ``body`` holds only its start."""
    keep_alive: bool = True


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    content_type: str = "application/json"


Route = Callable[[Request], Awaitable[Response]]


class _Parser:
    """httptools callbacks collecting whole requests (several, if a client pipelines)."""

    def __init__(self, body_limit: int) -> None:
        self.limit = body_limit
        self.done: deque[Request] = deque()
        self.parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.head = 0

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += len(name) + len(value)
        if self.head > _MAX_HEAD:
            raise httptools.HttpParserError("request head too large")
        key = name.decode("latin-1").lower()
        # trailers come through here too, after the body: a header of the same name wins
        self.headers.setdefault(key, value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= self.limit:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1").split("?", 1)[0]
        self.done.append(
            Request(
                self.parser.get_method().decode("ascii"),
                path,
                self.headers,
                b"".join(self.chunks),
                self.size > self.limit,
                self.parser.should_keep_alive(),
            )
        )


async def serve_connection(stream: SocketStream, route: Route, *, body_limit: int) -> None:
    """Answer the requests of one connection, in order, until the client closes it."""
    state = _Parser(body_limit)
    async with stream:
        try:
            while True:
                while not state.done:
                    data = await stream.receive(_READ)
                    state.parser.feed_data(data)
                request = state.done.popleft()
                response = await route(request)
                await stream.send(_encode(response, request.keep_alive))
                if not request.keep_alive:
                    return
        except (
            httptools.HttpParserError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            OSError,
        ):
            return


def _encode(response: Response, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        # values are ours (ids, JSON): never a line break, but a header is no place to trust
        *(f"{name}: {_one_line(value)}" for name, value in response.headers),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _one_line(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ") if "\r" in value or "\n" in value else value
