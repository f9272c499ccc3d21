"""File-watch: a directory watched (watchfiles) and rescanned, as a
:class:`~eventrun.abc.PushSource` with S3-shaped events.

Registered through the ``eventrun.sources`` entry point (``filewatch =
"eventrun.sources.filewatch:create"``) exactly like a third-party plugin; imports only the
seam (``eventrun.abc``, ``eventrun.asgi``, ``eventrun.exceptions``) and
``eventrun.brokers``.
"""

from __future__ import annotations

from eventrun.sources.filewatch._source import (
    RESCAN_INTERVAL_S,
    FileWatchSource,
    create,
)

__all__ = [
    "RESCAN_INTERVAL_S",
    "FileWatchSource",
    "create",
]
