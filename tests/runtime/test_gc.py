"""The daemon's collector settings: frozen start-up objects, a larger young generation."""

from __future__ import annotations

import gc
import json
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from eventrun.runtime._gc import YOUNG_THRESHOLD, tuned_gc
from tests._runtime_kit import running_app, write_app


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_freezes_and_raises_the_young_threshold_then_puts_both_back() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    with tuned_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)


def test_garbage_from_before_is_collected_not_frozen() -> None:
    gc.unfreeze()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    alive = weakref.ref(a)
    del a, b  # a cycle: only the collector frees it
    with tuned_gc():
        assert alive() is None


def test_nested_use_restores_only_at_the_outermost_exit() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    with tuned_gc():
        with tuned_gc():
            pass
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_larger_configured_threshold_is_kept() -> None:
    gc.set_threshold(YOUNG_THRESHOLD * 2, 10, 10)
    with tuned_gc():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2


async def test_the_runtime_serves_with_it_and_undoes_it_when_it_stops(tmp_path: Path) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    config = write_app(
        tmp_path,
        """
        store: {url: "sqlite:///state.db"}
        functions:
          f: {handler: app.handler, runtime: inline}
        """,
        {"app.py": "def handler(event, context):\n    return event\n"},
    )
    async with running_app(config, serve_http=False):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)


THRESHOLDS = """
import gc

def handler(event, context):
    return gc.get_threshold()
"""


async def test_process_workers_keep_pythons_defaults_while_the_daemon_is_tuned(
    tmp_path: Path,
) -> None:
    """README: inline handlers run under the daemon's settings, worker processes keep
    Python's defaults."""
    fresh = await anyio.run_process([sys.executable, "-c", "import gc; print(*gc.get_threshold())"])
    config = write_app(
        tmp_path,
        """
        store: {url: "sqlite:///state.db"}
        functions:
          worker: {handler: thresholds.handler}
          inline: {handler: thresholds.handler, runtime: inline}
        """,
        {"thresholds.py": THRESHOLDS},
    )
    async with running_app(config, serve_http=False) as rt:
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        in_worker = await rt.invoke("worker", b"{}")
        inline = await rt.invoke("inline", b"{}")
    assert in_worker.ok, in_worker
    assert json.loads(in_worker.payload) == [int(n) for n in fresh.stdout.split()]
    assert json.loads(inline.payload)[0] == YOUNG_THRESHOLD
