"""eventrun.server._httpguard: head deadline, head size and header count limits (per request),
the per-client connection cap and probes past the global limit, on a real uvicorn server
with the guarded protocol and a tiny app (tests/test_abuse.py runs the same against the
whole daemon)."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import anyio
import anyio.to_thread
import uvicorn
from anyio.abc import SocketStream
from starlette.types import Receive, Scope, Send

from eventrun.server._httpguard import HttpLimits, guarded_protocol

App = Callable[[Scope, Receive, Send], Awaitable[None]]
LIMITS = HttpLimits(
    head_timeout_s=10.0,
    keep_alive_s=30.0,
    max_head_bytes=64 * 1024,
    max_headers=200,
    max_per_client=256,
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers ``<path> <number of headers>``."""
    assert scope["type"] == "http"
    body = f"{scope['path']} {len(scope['headers'])}".encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving(
    limits: HttpLimits, *, limit_concurrency: int = 2048, asgi: App = app
) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        asgi,
        http=guarded_protocol(limits),
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=int(limits.keep_alive_s),
        limit_concurrency=limit_concurrency,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
                await anyio.sleep(0.01)
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
    sock.close()  # uvicorn closes it unless the test failed


async def _connect(port: int, source: str = "127.0.0.1") -> SocketStream:
    return await anyio.connect_tcp("127.0.0.1", port, local_host=source)


async def _until_closed(stream: SocketStream, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset)."""
    data = b""
    with anyio.fail_after(within_s):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def _response(stream: SocketStream) -> bytes:
    """One response with a content-length body."""
    data = b""
    with anyio.fail_after(10):
        while b"\r\n\r\n" not in data:
            data += await stream.receive()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += await stream.receive()
    return head + b"\r\n\r\n" + body


async def _get(port: int, path: str, source: str = "127.0.0.1") -> bytes:
    async with await _connect(port, source) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        return await _response(stream)


def _headers(count: int, size: int = 20) -> bytes:
    return b"".join(b"x-h%d: %s\r\n" % (i, b"v" * size) for i in range(count))


# -- the head deadline ------------------------------------------------------------------


async def test_idle_and_trickling_connections_are_closed_at_the_head_deadline() -> None:
    limits = replace(LIMITS, head_timeout_s=0.5)
    async with serving(limits) as port, AsyncExitStack() as stack:
        began = time.monotonic()
        idle = [await stack.enter_async_context(await _connect(port)) for _ in range(5)]
        partial = await stack.enter_async_context(await _connect(port))
        await partial.send(b"GET / HTTP/1.1\r\nhost: x\r\n")
        trickler = await stack.enter_async_context(await _connect(port))
        request = b"GET / HTTP/1.1\r\nhost: x\r\nx-a: b\r\n\r\n"
        closed = anyio.Event()

        async def trickle() -> None:
            for i in range(len(request) - 1):  # never the last byte
                if closed.is_set():
                    return
                try:
                    await trickler.send(request[i : i + 1])
                except (anyio.BrokenResourceError, OSError):
                    return
                await anyio.sleep(0.05)  # the trickle rate is the point of the test

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            # bound: the deadline plus a generous margin for two busy cores
            for stream in idle:
                assert await _until_closed(stream, 10) == b""
            assert (await _until_closed(partial, 10)).startswith(b"HTTP/1.1 408")
            assert (await _until_closed(trickler, 10)).startswith(b"HTTP/1.1 408")
            closed.set()
        took = time.monotonic() - began
        assert took >= 0.5
        # the server still serves; a connection that sends its head in time is answered
        assert (await _get(port, "/ok")).startswith(b"HTTP/1.1 200")


async def test_a_kept_alive_connection_must_send_its_next_head_in_time() -> None:
    limits = replace(LIMITS, head_timeout_s=0.5, keep_alive_s=1.0)
    async with serving(limits) as port, await _connect(port) as stream:
        await stream.send(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await _response(stream)).endswith(b"/one 1")
        began = time.monotonic()
        # one byte of the next head stops uvicorn's keep-alive timer for good
        await stream.send(b"GET /two HTTP/1.1\r\nho")
        assert (await _until_closed(stream, 10)).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - began >= 1.5  # keep_alive_s + head_timeout_s


async def test_a_slow_request_is_not_cut_by_the_head_deadline() -> None:
    limits = replace(LIMITS, head_timeout_s=0.3)
    release = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await app(scope, receive, send)

    async with serving(limits, asgi=slow) as port, await _connect(port) as stream:
        await stream.send(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await anyio.sleep(1.0)  # three head deadlines while the handler works
        release.set()
        assert (await _response(stream)).endswith(b"/slow 1")


# -- head size and header count ---------------------------------------------------------


async def test_a_head_over_the_byte_limit_is_431_per_request_on_a_kept_alive_connection() -> None:
    async with serving(LIMITS) as port, await _connect(port) as stream:
        near = _headers(150, 380)  # about 60 KiB: under the limit, twice in a row
        for path in (b"/a", b"/b"):
            await stream.send(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n" + near + b"\r\n")
            assert (await _response(stream)).endswith(path + b" 151")
        over = _headers(180, 380)  # about 70 KiB
        await stream.send(b"GET /c HTTP/1.1\r\nhost: x\r\n" + over + b"\r\n")
        assert (await _until_closed(stream, 10)).startswith(b"HTTP/1.1 431")


async def test_a_long_request_target_is_431() -> None:
    async with serving(LIMITS) as port, await _connect(port) as stream:
        await stream.send(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await _until_closed(stream, 10)).startswith(b"HTTP/1.1 431")


def _flood(port: int, first: bytes, filler: bytes, total: int) -> tuple[bytes, int]:
    """Send ``first``, then ``filler`` up to ``total`` bytes, stopping as soon as the
    server answers; return the answer and the bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(first)
        chunk = filler * (16384 // len(filler))
        sent = 0
        while sent < total and not select.select([s], [], [], 0)[0]:
            try:
                s.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        answer = b""
        with contextlib.suppress(OSError):
            while data := s.recv(65536):
                answer += data
        return answer, sent


async def test_one_endless_header_is_refused_soon_after_the_limit() -> None:
    """httptools collects a header's value itself (no callback until it ends): the
    protocol must count the chunks, or the value grows without bound."""
    async with serving(LIMITS) as port:
        first = b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: "
        answer, sent = await anyio.to_thread.run_sync(_flood, port, first, b"a", 64 << 20)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    # refused within a few chunks after the limit (socket buffers hold a few MB more)
    assert sent < 16 << 20, sent


async def test_many_headers_are_refused_soon_after_the_limit() -> None:
    async with serving(replace(LIMITS, max_headers=1_000_000)) as port:
        first = b"GET / HTTP/1.1\r\nhost: x\r\n"
        line = b"x-pad: " + b"a" * 100 + b"\r\n"
        answer, sent = await anyio.to_thread.run_sync(_flood, port, first, line, 64 << 20)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert sent < 16 << 20, sent


async def test_header_count_limit() -> None:
    async with serving(LIMITS) as port:
        async with await _connect(port) as stream:
            await stream.send(b"GET /n HTTP/1.1\r\n" + _headers(200, 1) + b"\r\n")
            assert (await _response(stream)).endswith(b"/n 200")
        async with await _connect(port) as stream:
            await stream.send(b"GET /n HTTP/1.1\r\n" + _headers(201, 1) + b"\r\n")
            assert (await _until_closed(stream, 10)).startswith(b"HTTP/1.1 431")


# -- connections ------------------------------------------------------------------------


async def test_probes_answer_past_the_global_limit_and_idle_sockets_are_reaped() -> None:
    """70 idle sockets against a limit of 64: other requests get uvicorn's 503, the probes
    still answer; the idle sockets are closed at the head deadline and service resumes."""
    limits = replace(LIMITS, head_timeout_s=2.0)
    async with serving(limits, limit_concurrency=64) as port, AsyncExitStack() as stack:
        idle = [await stack.enter_async_context(await _connect(port)) for _ in range(70)]
        # accepted in order: this request's connection comes after the 70 idle ones
        assert (await _get(port, "/other")).startswith(b"HTTP/1.1 503")
        for probe in ("/healthz", "/readyz"):
            assert (await _get(port, probe)).startswith(b"HTTP/1.1 200")
        for stream in idle:
            assert await _until_closed(stream, 15) == b""
        assert (await _get(port, "/other")).startswith(b"HTTP/1.1 200")


async def test_per_client_connection_cap() -> None:
    limits = replace(LIMITS, max_per_client=4)
    async with serving(limits) as port, AsyncExitStack() as stack:
        held = [await stack.enter_async_context(await _connect(port)) for _ in range(4)]
        async with await _connect(port) as fifth:
            assert (await _until_closed(fifth, 10)).startswith(b"HTTP/1.1 503")
        # another address is not affected
        assert (await _get(port, "/else", source="127.0.0.2")).startswith(b"HTTP/1.1 200")
        # a closed connection frees its place (the server sees the close soon after)
        await held.pop().aclose()
        with anyio.fail_after(10):
            while True:
                answer = await _get(port, "/again")
                if answer.startswith(b"HTTP/1.1 200"):
                    break
                await anyio.sleep(0.05)


async def test_no_per_client_cap_when_zero() -> None:
    limits = replace(LIMITS, max_per_client=0)
    async with serving(limits) as port, AsyncExitStack() as stack:
        for _ in range(300):
            await stack.enter_async_context(await _connect(port))
        assert (await _get(port, "/fine")).startswith(b"HTTP/1.1 200")


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with serving(LIMITS, asgi=_echo) as port, await _connect(port) as stream:
        head = b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nExpect: 100-Continue \r\n\r\n"
        await stream.send(head)
        interim = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in interim:
                interim += await stream.receive()
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # nothing sent yet but the head
        await stream.send(b"hello")
        response = await _response(stream)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"\r\n\r\nhello")


async def test_an_unsupported_upgrade_is_served_as_plain_http() -> None:
    async with serving(LIMITS) as port, await _connect(port) as stream:
        await stream.send(
            b"GET /up HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        response = await _response(stream)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"/up 3")
