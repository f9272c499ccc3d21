"""The local:NAME sink: messages land in the store queue local:NAME, with key and attributes."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from eventrun.abc import OutMessage, Sink, SinkSpec
from eventrun.exceptions import ConfigError, QueueFull, SinkUnavailable
from eventrun.sinks.local import LocalSink, create
from eventrun.store import QueueLimits
from eventrun.store._sqlite import SqliteStore


def _spec(store: object, name: str = "orders-failed") -> SinkSpec:
    return SinkSpec(url=f"local:{name}", kind="local", target=name, store=store)


def test_registered_as_the_local_entry_point() -> None:
    [point] = entry_points(group="eventrun.sinks", name="local")
    assert point.load() is create


async def test_messages_are_put_in_order_with_key_and_attributes(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        sink = create(_spec(store))
        assert isinstance(sink, Sink)
        messages = [
            OutMessage(b'{"n":1}', key="k1", attributes={"a": "1"}),
            OutMessage(b'{"n":2}', key="k1", attributes={"a": "1"}),
            OutMessage(b'{"n":3}', key="k2"),
            OutMessage(b'{"n":4}'),
        ]
        async with sink:
            await sink.send(messages)
            await sink.send([])
        entries = await store.peek("local:orders-failed")
        assert [e.payload for e in entries] == [m.payload for m in messages]
        assert [e.meta for e in entries] == [
            {"key": "k1", "attributes": {"a": "1"}},
            {"key": "k1", "attributes": {"a": "1"}},
            {"key": "k2", "attributes": {}},
            {"key": None, "attributes": {}},
        ]
        assert await store.queues() == ["local:orders-failed"]


async def test_a_failing_store_is_sink_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    async with store:
        pass  # closed now: every call raises StoreError
    async with create(_spec(store)) as sink:
        with pytest.raises(SinkUnavailable, match="local:orders-failed"):
            await sink.send([OutMessage(b"{}")])


@pytest.mark.parametrize("name", ["", "a/b"])
def test_a_bad_queue_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="expected local:NAME"):
        LocalSink(_spec(object(), name))


def test_without_a_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs the runtime's store"):
        LocalSink(_spec(None))


async def test_a_full_queue_is_sink_unavailable_and_nothing_is_put(tmp_path: Path) -> None:
    """Retryable (the router sends again, the record stays unacknowledged), never
    SinkRejected, and nothing of the batch is written."""
    async with SqliteStore(tmp_path / "s.db", limits=QueueLimits(max_depth=2)) as store:
        async with create(_spec(store)) as sink:
            await sink.send([OutMessage(b'{"n":1}')])
            with pytest.raises(SinkUnavailable, match="local:orders-failed is full") as caught:
                await sink.send([OutMessage(b'{"n":2}'), OutMessage(b'{"n":3}')])
        assert isinstance(caught.value.__cause__, QueueFull)
        assert caught.value.retryable
        assert [e.payload for e in await store.peek("local:orders-failed")] == [b'{"n":1}']
