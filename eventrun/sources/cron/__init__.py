"""Cron: EventBridge-style ``cron()``/``rate()`` schedules as a :class:`~eventrun.abc.PushSource`.

Registered through the ``eventrun.sources`` entry point (``cron =
"eventrun.sources.cron:create"``) exactly like a third-party plugin; imports only the seam
(``eventrun.abc``, ``eventrun.asgi``, ``eventrun.exceptions``) and ``eventrun.brokers``.
"""

from __future__ import annotations

from eventrun.sources.cron._source import (
    CronSource,
    create,
)

__all__ = [
    "CronSource",
    "create",
]
