"""Kafka: an aiokafka consumer group as a :class:`~eventrun.abc.Poller` (ordered per partition).

Registered through the ``eventrun.sources`` entry point (``kafka =
"eventrun.sources.kafka:create"``) exactly like a third-party plugin; imports only the seam
(``eventrun.abc``, ``eventrun.asgi``, ``eventrun.exceptions``) and ``eventrun.brokers``.
"""

from __future__ import annotations

from eventrun.sources.kafka._poller import (
    KafkaPoller,
    create,
)

__all__ = [
    "KafkaPoller",
    "create",
]
