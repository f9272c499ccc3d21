"""The function:NAME sink: each message becomes a queued async invocation of NAME."""

from __future__ import annotations

import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkUnavailable
from eventrun.sinks.function import create
from eventrun.store._sqlite import SqliteStore


def _spec(store: object, name: str = "enrich") -> SinkSpec:
    return SinkSpec(url=f"function:{name}", kind="function", target=name, store=store)


def test_registered_as_the_function_entry_point() -> None:
    [point] = entry_points(group="eventrun.sinks", name="function")
    assert point.load() is create


async def test_each_message_is_an_async_invocation_of_the_function(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        async with create(_spec(store)) as sink:
            await sink.send([OutMessage(b'{"order":1}', key="k"), OutMessage(b'{"order":2}')])
        leased = await store.lease("async:enrich", now=time.time(), limit=10, lease_s=30)
        assert [e.payload for e in leased] == [b'{"order":1}', b'{"order":2}']
        assert all(e.meta == {"source": "destination"} for e in leased)
        assert await store.queues() == ["async:enrich"]


async def test_a_failing_store_is_sink_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    async with create(_spec(store)) as sink:  # the store was never opened
        with pytest.raises(SinkUnavailable, match="function:enrich"):
            await sink.send([OutMessage(b"{}")])


def test_without_a_function_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected function:NAME"):
        create(_spec(object(), ""))
