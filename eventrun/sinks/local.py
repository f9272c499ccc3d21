"""The ``local:NAME`` sink: a queue in the runtime's store (the default DLQ).

Messages go to the store queue ``local:NAME`` with ``meta = {"key": KEY, "attributes":
{...}}``, where ``eventrun dlq list|show|redrive|purge local:NAME`` finds them. A run of
consecutive messages with the same key and attributes is one put (one transaction).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from eventrun.abc import OutMessage, SinkSpec
from eventrun.sinks._store_queue import StoreQueueSink, queue_name

__all__ = ["LocalSink", "create"]


def create(spec: SinkSpec) -> LocalSink:
    """Entry point ``eventrun.sinks: local``."""
    return LocalSink(spec)


class LocalSink(StoreQueueSink):
    """A :class:`eventrun.abc.Sink` into the store queue ``local:NAME``."""

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec, queue_name(spec, "local", "queue"))

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Put every message, in order; raise SinkUnavailable when the store fails."""

        def meta_of(message: OutMessage) -> tuple[str | None, tuple[tuple[str, str], ...]]:
            return message.key, tuple(sorted(message.attributes.items()))

        for (key, attributes), run in itertools.groupby(messages, key=meta_of):
            await self._put([m.payload for m in run], {"key": key, "attributes": dict(attributes)})
