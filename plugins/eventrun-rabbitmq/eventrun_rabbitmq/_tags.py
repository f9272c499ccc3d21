"""Delivery-tag bookkeeping for one AMQP channel: which acks may use ``multiple``.

``basic.ack(tag, multiple=True)`` acknowledges *every* unacknowledged delivery up to
``tag`` on the channel, so it is only correct when each of them is meant to be
acknowledged. :class:`TagLedger` keeps the channel's unsettled tags in delivery order and
turns a set of tags to acknowledge into one multiple ack for the longest settled prefix
plus single acks for the rest (a message held for a retry in between stops the prefix).
Pure, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["AckPlan", "TagLedger"]


@dataclass(slots=True)
class AckPlan:
    """What to send: ``basic.ack(multiple_upto, multiple=True)`` (when not None), then
    ``basic.ack(tag)`` for each of ``singles``."""

    multiple_upto: int | None = None
    singles: list[int] = field(default_factory=list)


class TagLedger:
    """Unsettled delivery tags of one channel, in delivery order."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._settled: set[int] = set()  # settled out of order, still in _order
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def delivered(self, tag: int) -> None:
        self._order.append(tag)
        self._live.add(tag)

    def is_live(self, tag: int) -> bool:
        return tag in self._live

    def plan_ack(self, tags: Iterable[int]) -> AckPlan:
        """Mark ``tags`` acknowledged and say how to send that (tags not live are
        ignored: already settled, or of an earlier channel)."""
        wanted = {t for t in tags if t in self._live}
        plan = AckPlan()
        if not wanted:
            return plan
        self._live.difference_update(wanted)
        order, settled = self._order, self._settled
        while order and (order[0] in wanted or order[0] in settled):
            tag = order.popleft()
            if tag in wanted:
                plan.multiple_upto = tag
                wanted.discard(tag)
            else:
                settled.discard(tag)
        if wanted:
            plan.singles = sorted(wanted)
            settled.update(wanted)
        return plan

    def settle(self, tags: Iterable[int]) -> list[int]:
        """Mark ``tags`` settled another way (rejected, returned); the live ones."""
        done = [t for t in tags if t in self._live]
        self._live.difference_update(done)
        self._settled.update(done)
        order, settled = self._order, self._settled
        while order and order[0] in settled:
            settled.discard(order.popleft())
        return done
