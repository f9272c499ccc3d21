"""Open the store a config's ``store.url`` names: SQLite (embedded) or Redis (shared).

* ``sqlite:///state.db`` — relative to the config file's directory;
* ``sqlite:////var/lib/eventrun/state.db`` — absolute; ``sqlite:///:memory:`` — in memory;
  ``?synchronous=full`` fsyncs every commit (survives power loss, not only daemon crashes);
* ``redis://[:password@]host:6379/0``, ``rediss://...`` (TLS) — shared by replicas;
  ``?prefix=NAME:`` changes the key prefix (default ``eventrun:``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from eventrun.abc import Clock
from eventrun.common import public_destination
from eventrun.exceptions import StoreError
from eventrun.store._base import QueueLimits, Store

if TYPE_CHECKING:
    from eventrun.config import StoreConfig

__all__ = ["open_configured_store", "open_store"]

_SYNCHRONOUS = ("normal", "full")


def open_configured_store(
    config: StoreConfig, *, config_dir: Path, clock: Clock | None = None
) -> Store:
    """The store a config's ``store:`` section describes, with its queue caps."""
    limits = QueueLimits(max_depth=config.max_queue_depth, max_bytes=config.max_queue_bytes)
    return open_store(config.url, config_dir=config_dir, clock=clock, limits=limits)


def open_store(
    url: str,
    *,
    config_dir: Path,
    clock: Clock | None = None,
    limits: QueueLimits | None = None,
) -> Store:
    """The store for ``url``, not yet entered (use ``async with``).

    Raises StoreError naming the URL when the scheme or an option is not understood.
    Nothing is connected or created until the store is entered. ``clock`` (default: the
    system's) stamps ``enqueued_at``; ``limits`` (default: :class:`QueueLimits`'s) caps
    every queue.
    """
    scheme, sep, _ = url.partition("://")
    if not sep and url.startswith("sqlite:"):
        scheme = "sqlite"
    scheme = scheme.lower()
    if scheme == "sqlite":
        return _sqlite(url, config_dir, clock, limits)
    if scheme in ("redis", "rediss"):
        return _redis(url, clock, limits)
    shown = public_destination(url)  # no password in messages
    raise StoreError(
        f"store.url: unknown store {shown!r}; expected sqlite:///REL/PATH.db, "
        "sqlite:////ABS/PATH.db or redis://HOST:PORT/DB"
    )


def _sqlite(url: str, config_dir: Path, clock: Clock | None, limits: QueueLimits | None) -> Store:
    from eventrun.store._sqlite import SqliteStore

    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise StoreError(
            f"store.url: {url!r} is not a SQLite URL; use sqlite:///relative/path.db "
            "(three slashes, relative to the config file) or sqlite:////absolute/path.db"
        )
    options = dict(parse_qsl(parts.query))
    sync = options.pop("synchronous", "normal").lower()
    if sync not in _SYNCHRONOUS or options:
        raise StoreError(
            f"store.url: {url!r}: the only SQLite option is synchronous=normal|full, "
            f"got {parts.query!r}"
        )
    sync_mode: Literal["NORMAL", "FULL"] = "FULL" if sync == "full" else "NORMAL"
    raw = parts.path[1:]
    if raw == ":memory:":
        return SqliteStore(":memory:", synchronous=sync_mode, clock=clock, limits=limits)
    path = Path(raw)
    if not path.is_absolute():
        path = config_dir / path
    return SqliteStore(path, synchronous=sync_mode, clock=clock, limits=limits)


def _redis(url: str, clock: Clock | None, limits: QueueLimits | None) -> Store:
    from eventrun.store._redis import RedisStore

    parts = urlsplit(url)
    if not parts.hostname:
        raise StoreError(f"store.url: {url!r} names no Redis host; expected redis://HOST:PORT/DB")
    query = parse_qsl(parts.query)
    prefixes = [value for key, value in query if key == "prefix"]
    rest = [(key, value) for key, value in query if key != "prefix"]
    plain = urlunsplit(parts._replace(query=urlencode(rest)))
    if prefixes:
        return RedisStore(plain, prefix=prefixes[-1], clock=clock, limits=limits)
    return RedisStore(plain, clock=clock, limits=limits)
