"""The daemon's end of a worker's socket: framed, non-blocking, driven by anyio.

A raw non-blocking socket with ``anyio.wait_readable``/``wait_writable`` keeps a warm
round trip to a handful of syscalls. One task uses a channel at a time (the pool hands a
worker to exactly one invocation), which is what ``wait_readable`` requires.

A channel that raised (cancelled mid-frame, EOF, garbage) is in an unknown state: the
caller must kill the worker and never use the channel again.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import anyio

from ._protocol import ChannelClosed, frame_length

__all__ = ["Channel"]

_HEADER_BYTES = 4
_CHUNK = 256 * 1024


class Channel:
    """Frames over a connected stream socket (the daemon side)."""

    __slots__ = ("_buf", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._buf = bytearray()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Close the socket; the worker sees EOF. Safe to call twice."""
        if self._sock.fileno() != -1:
            anyio.notify_closing(self._sock)
            self._sock.close()

    async def send(self, frame: bytes) -> None:
        """Write a whole frame; ChannelClosed if the worker is gone."""
        view = memoryview(frame)
        while view:
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await self._wait(anyio.wait_writable)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ChannelClosed(f"worker socket closed: {exc}") from exc
            view = view[sent:]

    async def receive(self) -> bytes:
        """Read one frame body. ChannelClosed on EOF, FrameError on a bad header."""
        length = frame_length(bytes(await self._take(_HEADER_BYTES)))
        return bytes(await self._take(length))

    async def _wait(self, waiter: Callable[[socket.socket], Awaitable[None]]) -> None:
        try:
            await waiter(self._sock)
        except (anyio.ClosedResourceError, OSError) as exc:
            raise ChannelClosed(f"worker socket closed: {exc!r}") from exc

    async def _take(self, n: int) -> bytearray:
        buf = self._buf
        while len(buf) < n:
            try:
                chunk = self._sock.recv(max(_CHUNK, n - len(buf)))
            except BlockingIOError:
                await self._wait(anyio.wait_readable)
                continue
            except ConnectionResetError as exc:
                raise ChannelClosed(f"worker socket reset: {exc}") from exc
            if not chunk:
                raise ChannelClosed("worker closed its socket")
            buf += chunk
        taken = buf[:n]
        del buf[:n]
        return taken
