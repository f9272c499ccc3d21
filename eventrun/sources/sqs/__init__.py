"""SQS: standard and FIFO queues polled with aiobotocore as a :class:`~eventrun.abc.Poller`.

Registered through the ``eventrun.sources`` entry point (``sqs =
"eventrun.sources.sqs:create"``) exactly like a third-party plugin; imports only the seam
(``eventrun.abc``, ``eventrun.asgi``, ``eventrun.exceptions``) and ``eventrun.brokers``.
"""

from __future__ import annotations

from eventrun.sources.sqs._poller import (
    DEFAULT_CONCURRENCY,
    MAX_RECEIVERS,
    STATS_INTERVAL_S,
    SqsPoller,
    create,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_RECEIVERS",
    "STATS_INTERVAL_S",
    "SqsPoller",
    "create",
]
