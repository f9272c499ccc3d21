"""Request checks of the daemon's HTTP server that are not about the bearer token
(threat model: docs/security.md).

* :func:`allowed_hosts` — the ``Host`` header values the server answers (DNS rebinding:
  a page on ``evil.example`` that re-points its name at 127.0.0.1 still sends
  ``Host: evil.example:PORT``); :class:`eventrun.server._fastpath.FastApp` looks the raw header up
  in that set on every request and answers anything else 421 Misdirected Request.
* :func:`cross_origin` / :func:`admin_write_refusal` — cross-site request forgery: a page
  a developer visits can POST to ``http://127.0.0.1:9000`` with a "simple" request (form
  or ``text/plain`` body, no preflight). State-changing admin requests must carry
  ``X-Eventrun-Request`` or a JSON content type (neither can be sent cross-origin without
  a CORS preflight, which the daemon never grants) and, when the browser sends
  ``Origin``, it must be the daemon's own.
* :class:`Sessions` — the status page's session cookie: ``TOKEN_ID.EXPIRY.MAC`` with the
  MAC keyed by a secret drawn at each daemon start; it expires, logout revokes it, and a
  restart (how tokens are rotated) revokes every session.
* :class:`LoginLimiter` — a token bucket per client address for failed sign-ins.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Iterable

__all__ = [
    "CSRF_HEADER",
    "LoginLimiter",
    "Sessions",
    "admin_write_refusal",
    "allowed_hosts",
    "cross_origin",
]

CSRF_HEADER = b"x-eventrun-request"
SESSION_TTL_S = 12 * 3600
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _bracketed(host: str) -> str:
    """An IPv6 address as it appears in a Host header."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]"
    except ValueError:
        pass
    return host


def allowed_hosts(bind: str, port: int, names: Iterable[str]) -> frozenset[bytes] | None:
    """The accepted ``Host`` values (lower case), or None to accept any.

    Each of the bind address, ``localhost``, ``127.0.0.1``, ``[::1]`` and the configured
    ``names`` is accepted bare and with ``:port``. None when ``names`` holds ``*``, or when
    the server binds every address and no names are configured (the addresses it is
    reached by are unknown; such a bind requires bearer tokens, which a rebound page
    cannot present)."""
    extra = [n.strip().lower() for n in names if n.strip()]
    if "*" in extra or (bind in _WILDCARDS and not extra):
        return None
    hosts = {"localhost", "127.0.0.1", "[::1]", *extra}
    if bind not in _WILDCARDS:
        hosts.add(_bracketed(bind.lower()))
    out = set()
    for host in hosts:
        out.add(host.encode("idna" if not host.isascii() else "ascii"))
        out.add(f"{host}:{port}".encode("idna" if not host.isascii() else "ascii"))
    return frozenset(out)


def cross_origin(origin: bytes | None, host: bytes | None) -> bool:
    """Whether a request's ``Origin`` names another site than the ``Host`` it was sent to
    (no ``Origin``: a non-browser client, or a same-origin GET: not cross-origin)."""
    if origin is None:
        return False
    if host is None:
        return True
    return origin not in (b"http://" + host, b"https://" + host)


def admin_write_refusal(headers: dict[bytes, bytes], *, form_ok: bool = False) -> str | None:
    """Why a state-changing admin request is refused (None: accepted). ``form_ok`` (sign
    in, sign out) also accepts a plain form post whose ``Origin`` is the daemon's own:
    every browser sends ``Origin`` with a POST, so a form without one is not a browser's."""
    origin = headers.get(b"origin")
    if cross_origin(origin, headers.get(b"host")):
        return "cross-origin request refused"
    if CSRF_HEADER in headers:
        return None
    if headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower() == b"application/json":
        return None
    if form_ok and origin is not None:
        return None
    return "state-changing requests need an X-Eventrun-Request header or a JSON body"


class Sessions:
    """Session cookie values for the status page (see module)."""

    def __init__(self, tokens: Iterable[bytes], *, ttl_s: float = SESSION_TTL_S) -> None:
        self._secret = secrets.token_bytes(32)
        self._ids = {self.token_id(t) for t in tokens}
        self.ttl_s = ttl_s
        self._revoked: dict[str, float] = {}  # value -> its expiry (then it can go)

    @staticmethod
    def token_id(token: bytes) -> str:
        return hashlib.sha256(b"eventrun token id\0" + token).hexdigest()[:16]

    def _mac(self, token_id: str, expiry: int) -> str:
        message = f"{token_id}.{expiry}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, token: bytes) -> str:
        token_id = self.token_id(token)
        expiry = int(time.time() + self.ttl_s)
        return f"{token_id}.{expiry}.{self._mac(token_id, expiry)}"

    def valid(self, value: str) -> bool:
        token_id, _, rest = value.partition(".")
        raw_expiry, _, mac = rest.partition(".")
        if token_id not in self._ids or not raw_expiry.isdigit() or value in self._revoked:
            return False
        expiry = int(raw_expiry)
        if expiry <= time.time():
            return False
        return hmac.compare_digest(mac, self._mac(token_id, expiry))

    def revoke(self, value: str) -> None:
        """Logout: the value is refused from now on (until it would have expired)."""
        if not self.valid(value):
            return
        now = time.time()
        self._revoked = {v: e for v, e in self._revoked.items() if e > now}
        self._revoked[value] = float(value.split(".")[1])


class LoginLimiter:
    """A token bucket per client address: ``burst`` failed sign-ins, then one more every
    ``1 / per_s`` seconds; :meth:`blocked` answers how long to wait (0: go ahead)."""

    def __init__(self, *, burst: int = 10, per_s: float = 0.2, max_clients: int = 10_000) -> None:
        self.burst = burst
        self.per_s = per_s
        self._max = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_s)

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 when it may now)."""
        tokens = self._tokens(client, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.per_s

    def failed(self, client: str) -> None:
        now = time.monotonic()
        if len(self._buckets) >= self._max:  # many addresses: forget them, stay bounded
            self._buckets.clear()
        self._buckets[client] = (self._tokens(client, now) - 1, now)
