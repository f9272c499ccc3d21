"""The ``function:NAME`` sink: an asynchronous invocation of another function.

Each message is put into the store queue ``async:NAME`` with ``meta = {"source":
"destination"}``; the runtime's async-invocation worker of NAME leases it and invokes NAME
with the payload as its event (with NAME's own retries and destinations). Nothing checks
here that NAME exists: the config validation does that.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventrun.abc import OutMessage, SinkSpec
from eventrun.sinks._store_queue import StoreQueueSink, queue_name

__all__ = ["FunctionSink", "create"]

_META = {"source": "destination"}


def create(spec: SinkSpec) -> FunctionSink:
    """Entry point ``eventrun.sinks: function``."""
    return FunctionSink(spec)


class FunctionSink(StoreQueueSink):
    """A :class:`eventrun.abc.Sink` queueing async invocations of one function."""

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec, queue_name(spec, "async", "function"))

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Queue one invocation per message, all in one put; SinkUnavailable on failure."""
        if messages:
            await self._put([m.payload for m in messages], _META)
