"""Tumbling windows (Lambda's ``TumblingWindowInSeconds``) for the shard poller.

A record belongs to the window ``[floor(t / W) * W, + W)`` of its arrival time ``t``
(Kinesis ``approximateArrivalTimestamp``, DynamoDB ``ApproximateCreationDateTime``). Per
shard, a :class:`WindowGate` hands the dispatcher the records of one window at a time, so
no batch mixes windows; each invocation's event carries ``window{start,end}``, the
``state`` the previous invocation of that window returned (``{}`` at first),
``shardId``, ``eventSourceARN``, ``isFinalInvokeForWindow`` and
``isWindowTerminatedEarly``. A window closes once a record of a later window was read, or
the shard is caught up past the window's end, or it ended (a reshard); then, after every
record of the window was handled, one more invocation with no records and
``isFinalInvokeForWindow: true`` goes out (a *final marker* record, alone in its batch
since nothing else of the shard is released before it is acknowledged).

A state over Lambda's 1 MB terminates the window early: the final invocation goes out at
once with ``isWindowTerminatedEarly: true`` (and that state), and the window goes on with
a fresh state ``{}`` (Lambda: "subsequent invoke will continue the same window with a
fresh state").

State and position are saved together after each successful invocation (``window:SHARD``
in the store: window, state, last sequence number), so a restarted daemon resumes the
window where it was, with its state (Lambda restarts the window from its checkpoint); the
final invocation's success drops the state.
"""

from __future__ import annotations

import json
import math
from collections import deque
from datetime import UTC, datetime
from typing import Any

from eventrun.abc import JSON, Record

__all__ = ["FINAL", "MAX_STATE_BYTES", "WindowGate", "is_final"]

FINAL = "eventrun:window-final"
"""``data_key`` of the final marker record."""
MAX_STATE_BYTES = 1024 * 1024
"""Lambda's limit on a window's state (as JSON); a larger one ends the window early."""


def is_final(record: Record) -> bool:
    return record.data_key == FINAL


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WindowGate:
    """One shard's open window: what was released of it, its state."""

    __slots__ = ("current", "early", "final_out", "released", "seconds", "state")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.current: tuple[float, float] | None = None
        self.state: JSON = {}
        self.released: str | None = None
        """Sequence number of the last record of the window handed out."""
        self.final_out = False
        self.early = False
        """The state outgrew :data:`MAX_STATE_BYTES`: a final invocation is due now."""

    def window_of(self, record: Record) -> tuple[float, float]:
        start = math.floor(record.timestamp / self.seconds) * self.seconds
        return start, start + self.seconds

    def restore(self, doc: dict[str, Any]) -> None:
        """Resume the window saved in the store (``start``, ``end``, ``state``, ``seq``)."""
        if doc.get("start") is not None and doc.get("seq"):
            self.current = (float(doc["start"]), float(doc["end"]))
            self.state = doc.get("state") if doc.get("state") is not None else {}
            self.released = str(doc["seq"])
            self.early = bool(doc.get("early"))

    def saved(self, seq: str) -> dict[str, Any]:
        """What :meth:`restore` reads back."""
        if self.current is None:
            return {"seq": seq}
        doc = {"start": self.current[0], "end": self.current[1], "state": self.state, "seq": seq}
        return {**doc, "early": True} if self.early else doc

    def keep(self, state: JSON) -> None:
        """The state an invocation of the window returned; over :data:`MAX_STATE_BYTES`
        (as JSON), the window is to end early."""
        self.state = state
        if len(json.dumps(state, separators=(",", ":")).encode()) > MAX_STATE_BYTES:
            self.early = True

    def close(self) -> None:
        """The final invocation was handled: the window is over, or (ended early) goes on
        with a fresh state."""
        if self.early:
            self.state, self.early, self.final_out = {}, False, False
            return
        self.current = None
        self.state = {}
        self.released = None
        self.final_out = False

    @property
    def open(self) -> bool:
        return self.current is not None

    def release(
        self,
        held: deque[Record],
        limit: int,
        *,
        acked: str | None,
        caught_up_past_end: bool,
        token: object,
    ) -> list[Record]:
        """Records of the open window from ``held`` (up to ``limit``), or the final marker
        once the window closed and all it released was handled (``acked``)."""
        if self.final_out:
            return []
        if self.current is None:
            if not held:
                return []
            self.current = self.window_of(held[0])
            self.state, self.released = {}, None
        out: list[Record] = []
        while (
            not self.early and held and len(out) < limit and self.window_of(held[0]) == self.current
        ):
            record = held.popleft()
            out.append(record)
            self.released = str(record.item_id)
        if out:
            return out
        if self.released is None:  # nothing of this window was ever read
            self.current = None
            return self.release(
                held, limit, acked=acked, caught_up_past_end=caught_up_past_end, token=token
            )
        if acked != self.released or not (held or caught_up_past_end or self.early):
            return []
        self.final_out = True
        end = self.current[1]
        return [
            Record(
                shard=str(getattr(token, "shard_id", "")),
                item_id=self.released,
                event={"eventrun": FINAL},
                data=b"",
                data_key=FINAL,
                timestamp=end,
                token=token,
                size=256,
            )
        ]

    def envelope(self, records: list[Record], shard: str, arn: str) -> dict[str, JSON]:
        """The batch event of a windowed invocation."""
        real = [r for r in records if not is_final(r)]
        start, end = self.current if self.current is not None else self.window_of(records[0])
        return {
            "Records": [r.event for r in real],
            "window": {"start": _iso(start), "end": _iso(end)},
            "state": self.state,
            "shardId": shard,
            "eventSourceARN": arn,
            "isFinalInvokeForWindow": len(real) < len(records),
            "isWindowTerminatedEarly": self.early and len(real) < len(records),
        }
