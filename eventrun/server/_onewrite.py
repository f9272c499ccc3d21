"""One write per small HTTP response: uvicorn's httptools protocol, with a response's
head held back until its body follows.

uvicorn writes a response's status line and headers, then its body, as two
``transport.write`` calls: two ``send`` system calls and two TCP segments for what is
usually a few hundred bytes. On the daemon's hot routes those two writes were the largest
single cost of a request (py-spy, bench/http.py: about 15 % of the daemon's CPU for the
head, 4 % for the body), and a system call costs more on a virtual machine than the
Python around it.

:class:`OneWriteProtocol` is uvicorn's ``HttpToolsProtocol`` handed a transport whose
``write`` keeps a response head back and sends it together with the next write, the body,
which Starlette sends in the same task step. Order is never changed: anything held is
sent before any later write, by ``close``, ``write_eof``, and at the latest by a
``call_soon`` flush, so a streaming response whose first chunk takes a while still gets
its head out at once. An interim ``100 Continue`` is never held. Everything else is
uvicorn's own code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["OneWriteProtocol"]

_HEAD = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 100 "


class _HeldHead:
    """A transport proxy that holds a response head until the next write."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[:9] == _HEAD and data[:13] != _CONTINUE:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.flush()
        self._transport.writelines(list_of_data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, one ``send`` per small response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeldHead(transport, self.loop))  # type: ignore[arg-type]
