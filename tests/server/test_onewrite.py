"""eventrun.server._onewrite: one send per small response, never a held head or reordered bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import Receive, Scope, Send

from eventrun.server._onewrite import OneWriteProtocol, _HeldHead

App = Callable[[Scope, Receive, Send], Any]


class _Recording:
    """The loop's transport calls a test can count (what reaches the socket)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", b"".join(parts)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True


async def test_head_and_body_go_out_in_one_call_and_in_order() -> None:
    raw = _Recording()
    held = _HeldHead(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.calls == []
    held.write(b"ok")
    assert raw.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")]
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim: never held
    assert raw.calls[-1] == ("write", b"HTTP/1.1 100 Continue\r\n\r\n")
    held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    held.close()  # a head without a body is flushed before the close
    assert raw.calls[-2:] == [("write", b"HTTP/1.1 204 No Content\r\n\r\n"), ("close", b"")]


async def test_a_held_head_is_flushed_by_the_loop_when_no_body_follows() -> None:
    raw = _Recording()
    held = _HeldHead(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)  # one loop iteration: the call_soon flush
    assert raw.calls == [("write", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")]


@asynccontextmanager
async def _serving(app: App) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=OneWriteProtocol, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn has no started event
                await anyio.sleep(0.01)
        try:
            yield port
        finally:
            server.should_exit = True


async def _read_until(stream: anyio.abc.ByteStream, marker: bytes) -> bytes:
    data = b""
    with anyio.fail_after(10):
        while marker not in data:
            data += await stream.receive()
    return data


async def test_a_streaming_response_sends_its_head_before_a_slow_first_chunk() -> None:
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await release.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    async with _serving(app) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await _read_until(stream, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"late" not in head
        release.set()
        rest = await _read_until(stream, b"0\r\n\r\n")
        assert b"late" in rest


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"got " + body})

    async with _serving(app) as port, await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        assert (await _read_until(stream, b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
        await stream.send(b"hi")
        response = await _read_until(stream, b"got hi")
        assert response.startswith(b"HTTP/1.1 200 OK")


class _Buffered(_Recording):
    """Also the calls uvicorn makes on flow control and on a broken connection."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True


async def test_writelines_abort_and_buffer_size_account_for_a_held_head() -> None:
    raw = _Buffered()
    raw.buffered = 10
    held = _HeldHead(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    held.write(head)
    assert held.get_write_buffer_size() == 10 + len(head)  # flow control sees held bytes
    held.writelines([b"bo", b"dy"])  # the head goes first
    assert raw.calls == [("write", head), ("writelines", b"body")]
    assert held.get_write_buffer_size() == 10
    held.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    held.abort()  # a held head is dropped, never written after the abort
    assert held.get_write_buffer_size() == 10
    await asyncio.sleep(0)  # the pending call_soon flush runs and finds nothing
    assert raw.calls[2:] == [("abort", b"")]
