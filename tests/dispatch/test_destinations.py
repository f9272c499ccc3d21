"""Destinations (``eventrun/_destinations.py``) in-process, with real sinks on a real store.

The ``file:`` sink is the cheapest real sink with both failure modes: a multi-line payload
that is not JSON is *refused* (SinkRejected), and a path it cannot write is *down*
(SinkUnavailable) until the file system is fixed. A refused message must be parked in
``local:eventrun-undeliverable``; a sink that is down must be retried until it accepts,
never dropped and never parked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import structlog.testing

from eventrun.abc import OutMessage
from eventrun.dispatch._backoff import Backoff
from eventrun.dispatch._destinations import UNDELIVERABLE, SinkRouter
from eventrun.store import Store
from eventrun.store._open import open_store
from eventrun.store._sqlite import SqliteStore

FAST = Backoff(base_s=0.005, cap_s=0.02, jitter=0.0)
REFUSED = b"not json\nacross two lines"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store("sqlite:///state.db", config_dir=tmp_path) as opened:
        yield opened


def router_for(tmp_path: Path, store: Store) -> SinkRouter:
    return SinkRouter(connections=None, config_dir=tmp_path, store=store, backoff=FAST)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_refused_message_is_parked_in_the_undeliverable_queue(
    tmp_path: Path, store: Store
) -> None:
    out = tmp_path / "out.jsonl"
    async with router_for(tmp_path, store) as router:
        with structlog.testing.capture_logs() as logs:
            await router.send("file:out.jsonl", [OutMessage(REFUSED, key="k1")])
        await router.send("file:out.jsonl", [OutMessage(b'{"n": 2}')])
        sent, failures = dict(router.sent), dict(router.failures)
    (parked,) = await store.peek(UNDELIVERABLE)
    assert parked.payload == REFUSED
    assert parked.meta["destination"] == "file:out.jsonl"
    assert "spanning lines is not JSON" in parked.meta["error"]
    # the sink itself got only the message it could take
    assert lines(out) == [{"n": 2}]
    assert sent == {"file:out.jsonl": 1}
    assert failures == {}  # refused is not "down": no retries
    (rejected,) = [e for e in logs if e["event"] == "sink.rejected"]
    assert rejected["destination"] == "file:out.jsonl"
    assert rejected["size"] == 1
    assert rejected["log_level"] == "error"
    assert REFUSED.decode() not in json.dumps(rejected)  # payloads are never logged


async def test_a_refused_fan_out_branch_does_not_hold_back_the_others(
    tmp_path: Path, store: Store
) -> None:
    async with router_for(tmp_path, store) as router:
        publisher = router.publisher(["file:a.jsonl", "local:copies"])
        assert publisher is not None
        await publisher.publish([OutMessage(REFUSED)])
    (parked,) = await store.peek(UNDELIVERABLE)
    assert (parked.payload, parked.meta["destination"]) == (REFUSED, "file:a.jsonl")
    (copy,) = await store.peek("local:copies")
    assert copy.payload == REFUSED
    assert not (tmp_path / "a.jsonl").exists()


async def test_a_sink_that_is_down_is_retried_until_it_accepts(
    tmp_path: Path, store: Store
) -> None:
    # ``blocked`` is a regular file where the sink needs a directory: every append fails
    # with NotADirectoryError (SinkUnavailable) until the test puts a directory there.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    url = "file:blocked/out.jsonl"
    messages = [OutMessage(b'{"n": 1}'), OutMessage(b'{"n": 2}')]
    async with router_for(tmp_path, store) as router:
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def send() -> None:
                    await router.send(url, messages)
                    done.set()

                tg.start_soon(send)
                with anyio.fail_after(10):
                    while router.failures.get(url, 0) < 3:  # noqa: ASYNC110 - a counter
                        await anyio.sleep(0.005)
                assert not done.is_set(), "send returned while the sink was down"
                assert await store.depth(UNDELIVERABLE) == 0, "a down sink's message was parked"
                blocked.unlink()
                blocked.mkdir()
                with anyio.fail_after(10):
                    await done.wait()
        sent, failures = dict(router.sent), dict(router.failures)
    assert lines(blocked / "out.jsonl") == [{"n": 1}, {"n": 2}]  # once, in order
    assert sent == {url: 2}
    assert failures[url] >= 3
    retries = [e for e in logs if e["event"] == "sink.send_failed"]
    assert len(retries) == failures[url]
    assert [e["attempt"] for e in retries] == list(range(1, len(retries) + 1))
    assert all(e["destination"] == url and e["retry_in_s"] >= 0 for e in retries)
    assert await store.depth(UNDELIVERABLE) == 0


async def test_a_routing_rule_sends_what_it_cannot_read_to_the_default(
    tmp_path: Path, store: Store
) -> None:
    """Results that are not a JSON object holding the field go to ``default``; without a
    default, to ``local:unrouted``."""
    from eventrun.config import RouteRule

    messages = [
        OutMessage(b'{"type": "a", "n": 1}'),
        OutMessage(b"not json"),
        OutMessage(b'["type", "a"]'),
        OutMessage(b'{"n": 4}'),
        OutMessage(b'{"type": "zzz"}'),
    ]
    async with router_for(tmp_path, store) as router:
        ruled = router.publisher(
            RouteRule(field="type", routes={"a": "local:a"}, default="local:b")
        )
        assert ruled is not None
        await ruled.publish(messages)
        bare = router.publisher(RouteRule(field="type", routes={"a": "local:a2"}))
        assert bare is not None
        await bare.publish(messages)
    assert [e.payload for e in await store.peek("local:a")] == [messages[0].payload]
    assert [e.payload for e in await store.peek("local:b")] == [m.payload for m in messages[1:]]
    assert [e.payload for e in await store.peek("local:a2")] == [messages[0].payload]
    unrouted = [e.payload for e in await store.peek("local:unrouted")]
    assert unrouted == [m.payload for m in messages[1:]]


async def test_parking_waits_for_a_store_that_is_down(tmp_path: Path) -> None:
    """A refused message whose park fails (the store is broken) is retried until the store
    takes it: never dropped, one ``store.put_failed`` line per attempt."""
    path = tmp_path / "park.db"

    def rename(old: str, new: str) -> None:
        conn = sqlite3.connect(path)
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        conn.commit()
        conn.close()

    async with SqliteStore(path) as parking, router_for(tmp_path, parking) as router:
        rename("entries", "entries_away")
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                done = anyio.Event()

                async def send() -> None:
                    await router.send("file:out.jsonl", [OutMessage(REFUSED)])
                    done.set()

                tg.start_soon(send)
                with anyio.fail_after(10):
                    while len([e for e in logs if e["event"] == "store.put_failed"]) < 3:  # noqa: ASYNC110 - a log line is the only signal
                        await anyio.sleep(0.005)
                assert not done.is_set()
                rename("entries_away", "entries")
                with anyio.fail_after(10):
                    await done.wait()
        (parked,) = await parking.peek(UNDELIVERABLE)
    assert parked.payload == REFUSED
    failed = [e for e in logs if e["event"] == "store.put_failed"]
    assert [e["attempt"] for e in failed] == list(range(1, len(failed) + 1))
    assert all("no such table" in e["error"] for e in failed)
