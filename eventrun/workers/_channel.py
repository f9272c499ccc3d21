"""The daemon's end of a worker's socket: framed messages over an asyncio transport.

The socket stays registered with the event loop for the worker's whole life (an asyncio
``Protocol`` collects what arrives): a warm round trip is then one write and one read. A
raw non-blocking socket with ``anyio.wait_readable`` would add, per message, a read that
fails with EAGAIN and a register/unregister of the descriptor (``epoll_ctl``) — on a
2-core machine serving HTTP that is a measurable share of a process invocation. The
daemon runs on asyncio (uvloop), so the transport is the loop's own.

One task uses a channel at a time (the pool hands a worker to exactly one invocation). A
channel that raised (cancelled mid-frame, EOF, garbage) is in an unknown state: the
caller must kill the worker and never use the channel again.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from ._protocol import ChannelClosed, frame_length

__all__ = ["Channel"]

_HEADER_BYTES = 4
_HIGH_WATER = 1024 * 1024  # bytes queued for the worker before send waits for it


class _Collector(asyncio.Protocol):
    """Buffers what the worker sends; wakes the one waiting task."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.closed: str | None = None  # why the connection ended
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: duck-typed
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        _wake(self.waiter)

    def eof_received(self) -> bool:
        self.closed = "worker closed its socket"
        _wake(self.waiter)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or f"worker socket closed: {exc!r}"
        _wake(self.waiter)
        _wake(self.drained)

    def pause_writing(self) -> None:
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        _wake(self.drained)
        self.drained = None


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Channel:
    """Frames over a connected stream socket (the daemon side)."""

    __slots__ = ("_peer", "_transport")

    def __init__(self, transport: asyncio.Transport, peer: _Collector) -> None:
        self._transport = transport
        self._peer = peer

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        """Take over ``sock`` (connected, AF_UNIX stream); closes it if that fails."""
        loop = asyncio.get_running_loop()
        try:
            transport, peer = await loop.create_unix_connection(_Collector, sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(transport, peer)

    def close(self) -> None:
        """Close the socket now (the worker sees EOF). Safe to call twice."""
        self._transport.abort()

    async def send(self, frame: bytes | bytearray) -> None:
        """Write a whole frame; ChannelClosed if the worker is gone."""
        peer = self._peer
        if peer.closed is not None or self._transport.is_closing():
            raise ChannelClosed(peer.closed or "worker socket closed")
        self._transport.write(frame)
        while peer.drained is not None and peer.closed is None:
            await peer.drained  # the worker is behind by more than _HIGH_WATER
        if peer.closed is not None:
            raise ChannelClosed(peer.closed)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the channel runs on (known once: on Python 3.11 each
        ``asyncio.get_running_loop()`` is a ``getpid`` system call)."""
        return self._peer.loop

    async def receive(self) -> bytes:
        """Read one frame body. ChannelClosed on EOF, FrameError on a bad header.

        A worker writes each frame with one ``send``: it usually arrives whole, in one
        ``data_received``, and is sliced out of the buffer once."""
        peer = self._peer
        need = 0  # the frame's whole size, once its header is in
        while True:
            buf = peer.buf
            if not need and len(buf) >= _HEADER_BYTES:
                need = _HEADER_BYTES + frame_length(bytes(buf[:_HEADER_BYTES]))
            if need and len(buf) >= need:
                body = bytes(buf[_HEADER_BYTES:need])
                del buf[:need]
                return body
            if peer.closed is not None:
                raise ChannelClosed(peer.closed)
            peer.waiter = peer.loop.create_future()
            try:
                await peer.waiter
            finally:
                peer.waiter = None
