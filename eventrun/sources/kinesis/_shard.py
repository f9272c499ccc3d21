"""One shard a poller holds: where it reads, what it read ahead, what was handled."""

from __future__ import annotations

from collections import deque

from eventrun.abc import Record
from eventrun.sources.kinesis._api import ShardInfo
from eventrun.sources.kinesis._windows import WindowGate

__all__ = ["READS_PER_S", "Shard"]

READS_PER_S = 5
"""GetRecords calls per shard in any one second at most (Kinesis's limit per shard)."""


class Shard:
    """A shard this daemon holds: where it reads and what it has handled."""

    __slots__ = (
        "acked",
        "behind_ms",
        "busy",
        "calls",
        "ended",
        "fetched",
        "gate",
        "held",
        "info",
        "iterator",
        "next_at",
        "read_at",
        "revoked",
        "throttles",
    )

    def __init__(self, info: ShardInfo, window_s: float = 0.0) -> None:
        self.info = info
        self.held: deque[Record] = deque()
        """Read but not yet handed to the dispatcher (the rest of a GetRecords answer)."""
        self.gate = WindowGate(window_s) if window_s > 0 else None
        self.read_at = 0.0
        """Wall time of the last GetRecords answer."""
        self.iterator: str | None = None
        self.fetched: str | None = None
        self.acked: str | None = None
        self.ended = False
        self.next_at = 0.0
        self.throttles = 0
        self.behind_ms = 0.0
        self.busy = False
        self.revoked = False
        self.calls: deque[float] = deque(maxlen=READS_PER_S)
        """When the last GetRecords calls were made (monotonic)."""

    @property
    def shard_id(self) -> str:
        return self.info.id
