"""Redis Streams: a consumer group read as a :class:`~eventrun.abc.Poller` (ordered per stream).

Registered through the ``eventrun.sources`` entry point (``redis_streams =
"eventrun.sources.redis_streams:create"``) exactly like a third-party plugin; imports only
the seam (``eventrun.abc``, ``eventrun.asgi``, ``eventrun.exceptions``) and
``eventrun.brokers``.
"""

from __future__ import annotations

from eventrun.sources.redis_streams._poller import (
    RedisStreamsPoller,
    create,
)

__all__ = [
    "RedisStreamsPoller",
    "create",
]
