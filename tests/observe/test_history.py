"""History: the status page's in-memory samples and their inline SVG sparklines."""

from __future__ import annotations

import re

import anyio

from eventrun.observe import History, sparkline


def doc(ok: int, error: int, lag: float | None = None, dlq: int = 0) -> dict[str, object]:
    sources = {"f/kafka[0]": {"lag": {"total": lag}}} if lag is not None else {}
    return {
        "functions": {"f": {"invocations": {"ok": ok, "error": error}}},
        "sources": {**sources, "f/http[0]": {}},
        "dlq": {"local:f-dlq": dlq},
    }


def test_series_are_per_interval_counts_and_sampled_gauges() -> None:
    h = History(interval_s=5, span_s=900)
    for i, (ok, error, lag, dlq) in enumerate(
        [(0, 0, 10, 0), (5, 1, 12, 1), (9, 1, 3, 1), (2, 0, 0, 2)]  # a reload reset counts
    ):
        h.sample(doc(ok, error, lag, dlq), at=100 + 5 * i)
    s = h.series()
    assert s["at"] == [100, 105, 110, 115]
    assert s["functions"] == {"f": {"invocations": [6, 4, 2], "errors": [1, 0, 0]}}
    assert s["lag"] == {"f/kafka[0]": [10.0, 12.0, 3.0, 0.0]}  # the http trigger has no lag
    assert s["dlq"] == {"local:f-dlq": [0, 1, 1, 2]}


def test_the_ring_buffer_keeps_fifteen_minutes() -> None:
    h = History(interval_s=5, span_s=900)
    for i in range(500):
        h.sample(doc(i, 0), at=float(i))
    assert len(h) == 181
    assert h.series()["at"][0] == 500 - 181


def test_a_series_missing_from_older_samples_is_zero_there() -> None:
    h = History()
    h.sample({"functions": {}, "sources": {}, "dlq": {}}, at=1)
    h.sample(doc(3, 0, dlq=4), at=2)
    s = h.series()
    assert s["functions"]["f"]["invocations"] == [3]
    assert s["dlq"]["local:f-dlq"] == [0, 4]


def test_sparkline_scales_to_the_maximum_and_escapes_its_label() -> None:
    svg = sparkline([0, 5, 10], label="<f>: calls", width=100, height=40, kind="calls")
    points = re.search(r'<polyline fill="none" points="([^"]+)"', svg)
    assert points is not None
    assert points.group(1) == "0.0,38.0 50.0,20.0 100.0,2.0"
    assert "&lt;f&gt;: calls: last 10, max 10" in svg
    assert "<f>" not in svg
    assert 'data-points="3"' in svg
    flat = sparkline([], label="empty")
    assert 'points=""' in flat


async def test_run_samples_at_once_then_every_interval() -> None:
    h = History(interval_s=0.05)
    calls = []
    third = anyio.Event()

    def stats() -> dict[str, object]:
        calls.append(1)
        if len(calls) == 3:
            third.set()
        return doc(len(calls), 0)

    async with anyio.create_task_group() as tg:
        await tg.start(h.run, stats, lambda: float(len(calls)))
        assert len(h) == 1  # sampled at once
        with anyio.fail_after(5):
            await third.wait()
        tg.cancel_scope.cancel()
    assert h.series()["functions"]["f"]["invocations"][:2] == [1, 1]
