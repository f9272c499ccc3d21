"""The last 15 minutes in memory, for the status page's charts (no external service).

:class:`History` samples the status document every ``interval_s`` (5 s) into a ring
buffer of ``span_s`` (15 min): per function the invocation and error totals, per trigger
the lag, per ``local:`` queue the depth. :meth:`History.series` turns it into the
``GET /status/history`` document: invocations and errors *per interval* (differences of
the totals; a counter that went down, after a reload, counts from zero), lag and DLQ
depth as sampled. :func:`sparkline` draws one series as an inline SVG polyline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise
from typing import Any

import anyio
from anyio.abc import TaskStatus

__all__ = ["History", "sparkline"]


@dataclass(slots=True, frozen=True)
class _Sample:
    at: float
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)
    """function -> (invocations, errors), totals."""
    lag: dict[str, float] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)


class History:
    """A ring buffer of status samples."""

    def __init__(self, *, interval_s: float = 5.0, span_s: float = 900.0) -> None:
        self.interval_s = interval_s
        self.span_s = span_s
        self._samples: deque[_Sample] = deque(maxlen=int(span_s / interval_s) + 1)

    def __len__(self) -> int:
        return len(self._samples)

    def sample(self, doc: Mapping[str, Any], at: float) -> None:
        """Record one status document (``Runtime.statistics()``) taken at ``at``."""
        calls = {}
        for name, fn in doc.get("functions", {}).items():
            inv = fn.get("invocations", {})
            errors = int(inv.get("error", 0))
            calls[name] = (int(inv.get("ok", 0)) + errors, errors)
        lag = {
            name: float(src["lag"]["total"])
            for name, src in doc.get("sources", {}).items()
            if isinstance(src.get("lag"), dict)
        }
        dlq = {q: int(d) for q, d in doc.get("dlq", {}).items()}
        self._samples.append(_Sample(at, calls, lag, dlq))

    def series(self) -> dict[str, Any]:
        """``{"interval_s", "span_s", "at": [...], "functions": {name: {"invocations":
        [...], "errors": [...]}}, "lag": {trigger: [...]}, "dlq": {queue: [...]}}``;
        per-interval counts have one value fewer than ``at`` (the first sample is
        their base). A series absent from a sample is 0 there."""
        samples = list(self._samples)
        functions: dict[str, dict[str, list[int]]] = {}
        names = sorted({n for s in samples for n in s.calls})
        for name in names:
            totals = [s.calls.get(name, (0, 0)) for s in samples]
            functions[name] = {
                "invocations": _deltas([t[0] for t in totals]),
                "errors": _deltas([t[1] for t in totals]),
            }
        lag_names = sorted({n for s in samples for n in s.lag})
        queues = sorted({q for s in samples for q in s.dlq})
        return {
            "interval_s": self.interval_s,
            "span_s": self.span_s,
            "at": [round(s.at, 3) for s in samples],
            "functions": functions,
            "lag": {n: [s.lag.get(n, 0.0) for s in samples] for n in lag_names},
            "dlq": {q: [s.dlq.get(q, 0) for s in samples] for q in queues},
        }

    async def run(
        self,
        statistics: Callable[[], Mapping[str, Any]],
        now: Callable[[], float],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sample ``statistics()`` now and every ``interval_s`` until cancelled."""
        task_status.started()
        while True:
            self.sample(statistics(), now())
            await anyio.sleep(self.interval_s)


def _deltas(totals: Sequence[int]) -> list[int]:
    return [b - a if b >= a else b for a, b in pairwise(totals)]


def sparkline(
    values: Sequence[float], *, label: str, width: int = 240, height: int = 40, kind: str = ""
) -> str:
    """An inline SVG chart of ``values`` (oldest first), scaled to its maximum."""
    top = max(values, default=0) or 1
    n = max(len(values) - 1, 1)
    points = " ".join(
        f"{i * width / n:.1f},{height - 2 - v * (height - 4) / top:.1f}"
        for i, v in enumerate(values)
    )
    last = values[-1] if values else 0
    title = f"{label}: last {last:g}, max {max(values, default=0):g}"
    return (
        f'<svg class="spark {escape(kind)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}" data-points="{len(values)}">'
        f"<title>{escape(title)}</title>"
        f'<polyline fill="none" points="{points}"/></svg>'
    )
