"""Limits that keep one client from exhausting the daemon's HTTP server.

uvicorn's httptools protocol has no deadline for a request head, no limit on its size
(``h11_max_incomplete_event_size`` applies to the h11 protocol only) and no per-client
view, so a few thousand idle sockets filled ``limit_concurrency`` and turned every
request, ``/healthz`` included, into a 503. :class:`GuardedProtocol` (the daemon's
:class:`~eventrun.server._onewrite.OneWriteProtocol` with these checks) adds:

* **A head deadline.** A new connection must deliver a complete request head within
  ``head_timeout_s``, or it is closed (``408`` first when part of a head arrived). After
  a response, uvicorn's keep-alive timer closes a connection that stays silent for
  ``keep_alive_s``, but the first byte of a next request stops that timer for good; so
  the next head must also be complete within ``keep_alive_s + head_timeout_s`` of the
  response, checked once per ``head_timeout_s`` (closed between that and one
  ``head_timeout_s`` later). One timer per connection, re-armed at most once per
  ``head_timeout_s``; nothing per request (a ``call_later`` + ``cancel`` per request
  would cost more than every other check here together).
* **Head size and header count limits**, per request (also on kept-alive connections):
  the request target and every header's name and value count against
  ``max_head_bytes`` and headers against ``max_headers``; over either -> ``431``. They
  are counted in the parser callbacks (``on_url``, ``on_header``); a single header that
  httptools is still collecting produces no callback, so a chunk of data that arrives
  entirely inside the head without one is counted as it arrives (httptools would
  otherwise grow that header by repeated concatenation, without bound).
* **A per-client connection cap** (by peer address): a client already holding
  ``max_per_client`` connections gets ``503`` and its new connection is closed at once.
  Behind a reverse proxy every connection comes from the proxy: raise it or set 0.
* **Probes past the global limit.** uvicorn answers 503 once ``limit_concurrency``
  connections or tasks exist; ``/healthz`` and ``/readyz`` skip that check, so a
  liveness probe does not restart a pod that is merely busy. A "reserved slot" cannot
  work here: what a connection is for is only known once its head is parsed, and by then
  it holds a slot already. The probes' handlers are constant-time and touch no worker.

A refused request gets its answer, then a half-close, and what the client still sends is
read and dropped for ``LINGER_S`` before the socket is closed: closing with unread data
sends a reset, which can destroy the answer before the client reads it. Refusals are
logged (``server.request_head_timeout``, ``server.request_head_too_large``,
``server.client_connection_limit``, ``server.connection_limit``) at most once per
``_LOG_EVERY_S`` together, so an attack does not become a log flood (uvicorn's own
"Exceeded concurrency limit." line per 503 is silenced); a connection that never sent a
byte is closed without a log line (browsers open speculative connections they may never
use).

Cost on the hot path: about 1.5 us a request of the protocol alone (16 us -> 17.5 us,
keep-alive POST with 5 headers, CPU time, median of 5 processes), from the callbacks'
counting; the daemon's own CPU per request is 50-100 us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.server import ServerState

from eventrun.server._onewrite import OneWriteProtocol

__all__ = ["GuardedProtocol", "HttpLimits", "guarded_protocol"]

log = structlog.get_logger("eventrun.server._api")

PROBES = frozenset({b"/healthz", b"/readyz"})
_SILENT = logging.getLogger("eventrun.server._api.uvicorn_refusals")
_SILENT.disabled = True  # stands in for uvicorn's logger while it refuses a request
_LOG_EVERY_S = 10.0
LINGER_S = 2.0


def _response(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(text), text)
    )


_TOO_LARGE = _response(b"431 Request Header Fields Too Large", b"Request Header Fields Too Large")
_TIMEOUT = _response(b"408 Request Timeout", b"Request Timeout")
_BUSY_CLIENT = _response(b"503 Service Unavailable", b"Too many connections from this address")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The server's limits (from ``server:`` in the config; defaults named once there)."""

    head_timeout_s: float
    keep_alive_s: float
    max_head_bytes: int
    max_headers: int
    max_per_client: int  # 0: no cap


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head that is over a limit."""


class GuardedProtocol(OneWriteProtocol):
    """:class:`OneWriteProtocol` with the limits above; use :func:`guarded_protocol`."""

    # slots, not the instance dict: uvicorn's protocol already sets 28 attributes, and
    # past 30 CPython 3.11 gives up its shared-key dict, slowing every attribute access
    # of every request (measured: +1 us a request)
    __slots__ = (
        "_head_bytes",
        "_head_count",
        "_head_due",
        "_head_open",
        "_head_pending",
        "_limit",
        "_peer",
        "_refused",
        "_timer",
        "_too_large",
    )

    limits: ClassVar[HttpLimits]
    max_head_bytes: ClassVar[int]  # copies of two limits: one lookup less per header
    max_headers: ClassVar[int]
    idle_after_response_s: ClassVar[float]  # keep_alive_s + head_timeout_s
    clients: ClassVar[dict[str, int]]  # open connections by peer address
    refused: ClassVar[list[float]]  # [when a refusal was last logged]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limit = self.limit_concurrency
        self._head_open = False  # between on_message_begin and on_headers_complete
        self._head_bytes = 0  # counted in the callbacks
        self._head_pending = 0  # chunks inside a header httptools is still collecting
        self._head_count = 0
        self._too_large = False
        self._refused = False  # answered 408/431: what still arrives is dropped
        self._head_due: float | None = None  # when the awaited head must be complete
        self._timer: asyncio.TimerHandle | None = None
        self._peer: str | None = None  # counted in ``clients``

    # -- connections ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if limits.max_per_client and self.client:
            peer = self.client[0]
            open_now = self.clients.get(peer, 0)
            if open_now >= limits.max_per_client:
                self._log_refusal("server.client_connection_limit", peer=peer)
                self.transport.write(_BUSY_CLIENT)
                self.transport.close()
                return
            self.clients[peer] = open_now + 1
            self._peer = peer
        self._head_due = self.loop.time() + limits.head_timeout_s
        self._timer = self.loop.call_later(limits.head_timeout_s, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self._peer
        if peer is not None:
            self._peer = None
            left = self.clients[peer] - 1
            if left:
                self.clients[peer] = left
            else:
                del self.clients[peer]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _check_deadline(self) -> None:
        self._timer = None
        if self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        due = self._head_due
        if due is None:  # the last head arrived: its request is handled, or it was answered
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                delay = self.limits.head_timeout_s
            else:  # answered (at most one check ago): the next head is due
                self._head_due = now + self.idle_after_response_s
                delay = self.idle_after_response_s
        else:
            delay = due - now
            if delay <= 0:
                if self._head_open:  # part of a head arrived: say why it is closed
                    self._log_refusal("server.request_head_timeout", peer=self._peer_name())
                    self._refuse(_TIMEOUT)
                else:
                    self.transport.close()
                return
        self._timer = self.loop.call_later(delay, self._check_deadline)

    # -- request heads --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the head-size refusal and count added
        if self._refused:
            return
        self._unset_keepalive_if_required()
        was_open = self._head_open
        counted = self._head_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._too_large:
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if was_open and self._head_open:
            if self._head_bytes != counted:  # a header ended: counted in on_header
                self._head_pending = 0
            else:  # no callback: the whole chunk belongs to a header still being collected
                self._head_pending += len(data)
                if counted + self._head_pending > self.max_head_bytes:
                    self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = 0
        self._head_pending = 0
        self._head_count = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes + len(name) + len(value)
        count = self._head_count + 1
        self._head_bytes = size
        self._head_count = count
        if size > self.max_head_bytes or count > self.max_headers:
            self._too_large = True
            raise _HeadTooLarge
        # uvicorn's on_header, inlined (one call less per header)
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_due = None
        limit = self._limit
        if limit is not None and self.url in PROBES:
            self.limit_concurrency = None  # uvicorn's 503 check skipped for probes
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency = limit
        elif limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # uvicorn answers 503 and logs a line per refused request: under a flood
            # that is a log line per request. Ours is rate-limited like the others.
            self._log_refusal("server.connection_limit", limit=limit, peer=self._peer_name())
            logger, self.logger = self.logger, _SILENT
            try:
                super().on_headers_complete()
            finally:
                self.logger = logger
        else:
            super().on_headers_complete()

    def _refuse_head(self) -> None:
        self._log_refusal("server.request_head_too_large", peer=self._peer_name())
        self._refuse(_TOO_LARGE)

    def _refuse(self, response: bytes) -> None:
        """Answer, half-close, and drop what the client still sends for ``LINGER_S``
        before closing: closing a socket with unread data sends a reset, which can
        destroy the answer before the client reads it (nginx's "lingering close")."""
        self._refused = True
        self._head_open = False
        transport = self.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def _peer_name(self) -> str:
        return self.client[0] if self.client else ""

    def _log_refusal(self, event: str, **fields: Any) -> None:
        """At most one warning per ``_LOG_EVERY_S`` for all refusals: an attack must not
        turn into a flood of log lines."""
        now = time.monotonic()
        if now - self.refused[0] >= _LOG_EVERY_S:
            self.refused[0] = now
            log.warning(event, **fields)


def guarded_protocol(limits: HttpLimits) -> type[GuardedProtocol]:
    """A protocol class for one server: its limits and its own per-client counts."""

    class Guarded(GuardedProtocol):
        pass

    Guarded.limits = limits
    Guarded.max_head_bytes = limits.max_head_bytes
    Guarded.max_headers = limits.max_headers
    Guarded.idle_after_response_s = limits.keep_alive_s + limits.head_timeout_s
    Guarded.clients = {}
    Guarded.refused = [-_LOG_EVERY_S]
    return Guarded
