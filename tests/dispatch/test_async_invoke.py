"""Asynchronous invocations through a whole runtime: durable queue, retries, destinations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from eventrun.exceptions import StoreError
from eventrun.store import Store
from eventrun.store._open import open_store
from eventrun.testing import FakeClock, MemorySink
from tests._runtime_kit import running_app, write_app
from tests.fixtures.redis import RedisServer

HANDLERS = """
import json, os, pathlib

def ok(event, context):
    return {"echo": event, "request_id": context.aws_request_id}

def flaky(event, context):
    # fails until the marker file lists `fail_times` attempts
    marker = pathlib.Path(event["marker"])
    seen = marker.read_text().count("x") if marker.exists() else 0
    marker.write_text("x" * (seen + 1))
    if seen < event["fail_times"]:
        raise RuntimeError(f"attempt {seen + 1} fails")
    return {"attempt": seen + 1}
"""

COUNTING = """
import os

def handler(event, context):
    with open(os.environ["COUNTER"], "a") as f:
        f.write("x")
    return event
"""

CONFIG = """
store: {url: "sqlite:///state.db"}
functions:
  ok:
    handler: handlers:ok
    destinations: {on_success: "local:ok-success"}
  flaky:
    handler: handlers:flaky
    maximum_retry_attempts: 2
    destinations: {on_failure: "local:flaky-failed", on_success: "local:flaky-success"}
"""


async def _wait_depth(store: Store, queue: str, depth: int) -> None:
    with anyio.fail_after(30):
        # the store is written by the runtime's tasks; it has no change notification
        while await store.depth(queue) < depth:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def _entries(store: Store, queue: str) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in await store.peek(queue)]


async def test_success_destination_record(tmp_path: Path) -> None:
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    async with running_app(config) as rt:
        rid = await rt.enqueue("ok", b'{"n": 1}')
        await _wait_depth(rt.store, "local:ok-success", 1)
        (record,) = await _entries(rt.store, "local:ok-success")
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": rid,
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:ok:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"echo": {"n": 1}, "request_id": rid}
    assert record["timestamp"].endswith("Z")


async def test_retries_then_success(tmp_path: Path) -> None:
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    marker = tmp_path / "m1"
    async with running_app(config) as rt:
        await rt.enqueue("flaky", json.dumps({"marker": str(marker), "fail_times": 2}).encode())
        await _wait_depth(rt.store, "local:flaky-success", 1)
        (record,) = await _entries(rt.store, "local:flaky-success")
        assert await rt.store.depth("local:flaky-failed") == 0
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["responsePayload"] == {"attempt": 3}
    assert marker.read_text() == "xxx"


async def test_retries_exhausted_goes_to_on_failure(tmp_path: Path) -> None:
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    marker = tmp_path / "m2"
    event = {"marker": str(marker), "fail_times": 99}
    async with running_app(config) as rt:
        rid = await rt.enqueue("flaky", json.dumps(event).encode())
        await _wait_depth(rt.store, "local:flaky-failed", 1)
        (record,) = await _entries(rt.store, "local:flaky-failed")
    assert marker.read_text() == "xxx"  # first attempt + 2 retries
    assert record["requestContext"]["requestId"] == rid
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == event
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "attempt 3 fails"


async def test_queued_invocations_survive_a_restart(tmp_path: Path) -> None:
    """Entries a previous daemon queued (and never ran) are delivered by the next one."""
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    async with open_store("sqlite:///state.db", config_dir=tmp_path) as store:
        await store.put("async:ok", [b'{"n": 1}', b'{"n": 2}'], meta={"request_id": "r-1"})
    async with running_app(config) as rt:
        await _wait_depth(rt.store, "local:ok-success", 2)
        records = await _entries(rt.store, "local:ok-success")
        assert await rt.store.depth("async:ok") == 0
    assert sorted(r["requestPayload"]["n"] for r in records) == [1, 2]


async def test_expired_events_are_not_invoked(tmp_path: Path) -> None:
    config = write_app(tmp_path, CONFIG, {"handlers.py": HANDLERS})
    async with open_store("sqlite:///state.db", config_dir=tmp_path) as store:
        (entry_id,) = await store.put("async:flaky", [b'{"old": true}'])
        # pretend it was queued 7 hours ago (older than maximum_event_age 6h)
        entry = await store.get("async:flaky", entry_id)
        assert entry is not None
    import sqlite3

    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE entries SET enqueued_at = enqueued_at - 25200")
    db.commit()
    db.close()
    async with running_app(config) as rt:
        await _wait_depth(rt.store, "local:flaky-failed", 1)
        (record,) = await _entries(rt.store, "local:flaky-failed")
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responsePayload" not in record


class _AckFailsOnce:
    """A real SQLite store whose first ack fails as if the store went down."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ack(self, queue: str, ids: Any) -> None:
        if not self.failed:
            self.failed = True
            from eventrun.exceptions import StoreError

            raise StoreError("store unavailable (simulated)")
        await self._inner.ack(queue, ids)


async def test_store_failure_does_not_stop_async_invocations(tmp_path: Path) -> None:
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings
    from eventrun.testing import FakeClock, MemorySink

    clock = FakeClock()
    calls: list[bytes] = []

    class _Result:
        ok = True
        error_type = None
        payload = b"null"

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        calls.append(payload)
        return _Result()

    async with open_store("sqlite:///s.db", config_dir=tmp_path, clock=clock) as inner:
        store = _AckFailsOnce(inner)
        settings = AsyncSettings(function="f", concurrency=1, timeout_s=1.0, idle_poll_s=0.01)
        invoker = AsyncInvoker(
            settings, invoke, store, clock=clock, on_success=None, on_failure=MemorySink()
        )
        async with anyio.create_task_group() as tg:
            await tg.start(invoker.run)
            await invoker.enqueue(b'{"n": 1}')
            with anyio.fail_after(10):
                while not store.failed:  # noqa: ASYNC110 - the store has no change event
                    await anyio.sleep(0.01)
                # the lease (timeout + 5 s) runs out on the store's clock: invoked again
                await clock.advance(7)
                while await inner.depth("async:f"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert calls == [b'{"n": 1}', b'{"n": 1}']  # at-least-once: once more, not lost


@pytest.mark.redis
async def test_a_destination_that_is_down_holds_the_invocation_until_it_is_back(
    tmp_path: Path,
) -> None:
    """An asynchronous invocation's ``on_success`` destination (a real redis-server, not
    started yet) is down: the queued invocation stays in ``async:FUNCTION`` (not
    acknowledged) and is not invoked again; once the server is up the destination
    record arrives once and the entry is acknowledged."""
    dest = RedisServer()  # a free port, nothing listening yet
    counter = tmp_path / "calls"
    config = write_app(
        tmp_path,
        f"""
        connections: {{redis: {{dest: {{url: "{dest.url}"}}}}}}
        store: {{url: "sqlite:///state.db"}}
        functions:
          counted:
            handler: counting:handler
            timeout: 30  # the queue lease (timeout + 5 s) outlasts the outage: no re-invoke
            environment: {{COUNTER: "{counter}"}}
            destinations: {{on_success: "redis:dest/done"}}
        """,
        {"counting.py": COUNTING},
    )
    try:
        async with running_app(config) as rt:
            assert rt.router is not None
            rid = await rt.enqueue("counted", b'{"n": 1}')
            with anyio.fail_after(30):
                while rt.router.failures.get("redis:dest/done", 0) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.02)  # a counter: no event for a failed send
            assert await rt.store.depth("async:counted") == 1, "acknowledged while down"
            dest.start()
            client = aioredis.Redis.from_url(dest.url, decode_responses=True)
            try:
                with anyio.fail_after(60):
                    while await rt.store.depth("async:counted"):  # noqa: ASYNC110
                        await anyio.sleep(0.02)  # the store has no change event
                entries = await client.xrange("done")
            finally:
                await client.aclose()
            stats = rt.functions["counted"].async_invoker.stats
            assert (stats.invoked, stats.succeeded) == (1, 1)
    finally:
        dest.stop()
    assert counter.read_text() == "x"  # invoked once: only the destination was retried
    (entry,) = entries
    record = json.loads(entry[1]["data"])
    assert record["requestContext"]["requestId"] == rid
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == {"n": 1}


async def test_enqueue_into_a_full_queue_raises_queue_full_and_stores_nothing(
    tmp_path: Path,
) -> None:
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings
    from eventrun.exceptions import QueueFull
    from eventrun.store import QueueLimits
    from eventrun.testing import FakeClock, MemorySink

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        raise AssertionError("not run: the invoker is not started")

    limits = QueueLimits(max_depth=10, max_bytes=2048)
    async with open_store("sqlite:///s.db", config_dir=tmp_path, limits=limits) as store:
        settings = AsyncSettings(function="f", concurrency=1, timeout_s=1.0)
        invoker = AsyncInvoker(
            settings, invoke, store, clock=FakeClock(), on_success=None, on_failure=MemorySink()
        )
        await invoker.enqueue(b'{"pad": "' + b"x" * 1500 + b'"}')
        usage = await store.usage("async:f")
        for _ in range(3):
            with pytest.raises(QueueFull, match=r"async:f is full.*max_queue_bytes \(2048"):
                await invoker.enqueue(b'{"pad": "' + b"x" * 600 + b'"}')
        assert await store.usage("async:f") == usage
        assert invoker.stats.queued == 1
        assert store.full.counts == {"async:f": 3}


async def test_a_full_dlq_holds_the_entry_without_invoking_it_again(tmp_path: Path) -> None:
    """The failure record cannot go into the DLQ at its cap: the router retries, the entry
    stays in async:f with its lease renewed (so a free slot never invokes it again), and
    once the DLQ has room the record goes in and the entry is acknowledged."""
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings
    from eventrun.dispatch._destinations import SinkRouter
    from eventrun.store import QueueLimits
    from eventrun.testing import FakeClock
    from tests._dispatch_kit import FAST

    clock = FakeClock()
    calls: list[bytes] = []

    class _Failed:
        ok = False
        error_type = "RuntimeError"
        payload = b'{"errorMessage": "no", "errorType": "RuntimeError"}'

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        calls.append(payload)
        return _Failed()

    limits = QueueLimits(max_depth=1)
    async with (
        open_store("sqlite:///s.db", config_dir=tmp_path, clock=clock, limits=limits) as store,
        SinkRouter(connections=None, config_dir=tmp_path, store=store, backoff=FAST) as router,
    ):
        [blocker] = await store.put("local:f-dlq", [b"{}"])
        settings = AsyncSettings(
            function="f",
            concurrency=2,  # a free slot that could lease the entry again
            timeout_s=1.0,  # lease: 6 s
            maximum_retry_attempts=0,
            idle_poll_s=0.01,
        )
        invoker = AsyncInvoker(
            settings,
            invoke,
            store,
            clock=clock,
            on_success=None,
            on_failure=router.publisher("local:f-dlq"),
        )
        async with anyio.create_task_group() as tg:
            await tg.start(invoker.run)
            await invoker.enqueue(b'{"n": 1}')
            [entry] = await store.peek("async:f")
            with anyio.fail_after(20):
                # refusals and renewals are store writes; nothing signals them
                while store.full.counts.get("local:f-dlq", 0) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                held = 0.0
                for _ in range(6):  # three leases' worth of time, half a lease at a time
                    await clock.advance(3)
                    while True:
                        current = await store.get("async:f", entry.id)
                        assert current is not None
                        if current.available_at > held:
                            held = current.available_at
                            break
                        await anyio.sleep(0.01)
                assert calls == [b'{"n": 1}']
                await store.ack("local:f-dlq", [blocker])
                while await store.depth("async:f"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert calls == [b'{"n": 1}']
        [dead] = await store.peek("local:f-dlq")
        assert json.loads(dead.payload)["requestContext"]["condition"] == "RetriesExhausted"


class _LeaseAndHoldFailOnce:
    """A real SQLite store whose first lease and first lease extension fail as if the
    store were briefly unreachable."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.lease_failed = False
        self.hold_failed = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def lease(self, queue: str, **kwargs: Any) -> Any:
        if not self.lease_failed:
            self.lease_failed = True
            raise StoreError("store unavailable (simulated lease)")
        return await self._inner.lease(queue, **kwargs)

    async def retry(self, queue: str, entry_id: str, **kwargs: Any) -> None:
        if not self.hold_failed.is_set():
            self.hold_failed.set()
            raise StoreError("store unavailable (simulated hold)")
        await self._inner.retry(queue, entry_id, **kwargs)


class _GatedSink(MemorySink):
    """A destination that takes its time: publish waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing = anyio.Event()
        self.gate = anyio.Event()

    async def publish(self, messages: Any) -> None:
        self.publishing.set()
        await self.gate.wait()
        await super().publish(messages)


async def test_a_failed_lease_or_lease_extension_is_logged_and_the_invocation_goes_on(
    tmp_path: Path,
) -> None:
    """The first lease fails (store.lease_failed, polled again after a backoff); while
    the destination is slow the entry's lease is extended every half lease, and a failed
    extension is logged (async.hold_failed) without dropping the invocation. The payload is
    not JSON: the destination record carries it as text."""
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings

    clock = FakeClock()
    calls: list[bytes] = []

    class _Result:
        ok = True
        error_type = None
        payload = b"null"

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        calls.append(payload)
        return _Result()

    sink = _GatedSink()
    async with open_store("sqlite:///s.db", config_dir=tmp_path, clock=clock) as inner:
        store = _LeaseAndHoldFailOnce(inner)
        settings = AsyncSettings(function="f", concurrency=1, timeout_s=1.0, idle_poll_s=0.01)
        invoker = AsyncInvoker(
            settings, invoke, store, clock=clock, on_success=sink, on_failure=None
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(invoker.run)
                await invoker.enqueue(b"\xffnot json")
                with anyio.fail_after(30):
                    await sink.publishing.wait()
                    # half the lease (timeout + 5 s) passes while publishing: extend it
                    await clock.advance((settings.timeout_s + 5.0) / 2)
                    await store.hold_failed.wait()
                    sink.gate.set()
                    await sink.wait_for(1)
                    while await inner.depth("async:f"):  # noqa: ASYNC110 - no change event
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    assert calls == [b"\xffnot json"]  # once: neither failure caused a second invocation
    events = [(e["event"], e.get("error")) for e in logs if e["log_level"] == "warning"]
    assert events == [
        ("store.lease_failed", "store unavailable (simulated lease)"),
        ("async.hold_failed", "store unavailable (simulated hold)"),
    ]
    record = json.loads(sink.messages[0].payload)
    assert record["requestPayload"] == "\ufffdnot json"
    assert record["requestContext"]["condition"] == "Success"


async def test_an_invocation_that_failed_for_good_is_logged_as_async_failed(
    tmp_path: Path,
) -> None:
    """Retries exhausted: the failure record goes to on_failure, an ``async.failed``
    warning names the request, the condition and the invoke count, and the entry is
    acknowledged."""
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings

    class _Failed:
        ok = False
        error_type = "ValueError"
        payload = b'{"errorMessage": "no", "errorType": "ValueError"}'

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        return _Failed()

    failures = MemorySink()
    async with open_store("sqlite:///s.db", config_dir=tmp_path) as store:
        settings = AsyncSettings(
            function="f", concurrency=1, timeout_s=1.0, maximum_retry_attempts=0, idle_poll_s=0.01
        )
        invoker = AsyncInvoker(
            settings, invoke, store, clock=FakeClock(), on_success=None, on_failure=failures
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(invoker.run)
                rid = await invoker.enqueue(b'{"n": 1}')
                with anyio.fail_after(30):
                    await failures.wait_for(1)
                    while await store.depth("async:f"):  # noqa: ASYNC110 - no change event
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    (failed,) = [e for e in logs if e["event"] == "async.failed"]
    assert failed["log_level"] == "warning"
    assert (failed["request_id"], failed["condition"], failed["invoke_count"]) == (
        rid,
        "RetriesExhausted",
        1,
    )
    record = json.loads(failures.messages[0].payload)
    assert record["requestContext"]["condition"] == "RetriesExhausted"


async def test_an_invocation_running_here_is_not_run_again_when_the_wall_clock_jumps(
    tmp_path: Path,
) -> None:
    """Regression (found by tests/chaos/test_clock.py): leases run on the wall clock, so a
    clock stepped an hour forward lets the invoker lease an entry it is still running;
    it used to invoke it a second time."""
    from eventrun.dispatch._async_invoke import AsyncInvoker, AsyncSettings

    class _Ok:
        ok = True
        error_type = None
        payload = b"{}"

    clock = FakeClock()
    calls: list[str] = []
    started, finish = anyio.Event(), anyio.Event()

    async def invoke(payload: bytes, *, request_id: str) -> Any:
        calls.append(request_id)
        started.set()
        await finish.wait()
        return _Ok()

    async with open_store("sqlite:///s.db", config_dir=tmp_path) as store:
        settings = AsyncSettings(function="f", concurrency=4, timeout_s=1.0, idle_poll_s=0.01)
        invoker = AsyncInvoker(
            settings, invoke, store, clock=clock, on_success=None, on_failure=MemorySink()
        )
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(invoker.run)
                await invoker.enqueue(b'{"n": 1}')
                with anyio.fail_after(10):
                    await started.wait()
                clock.jump_wall(3600)  # the entry's lease (6 s) has run out by wall time
                with anyio.fail_after(10):
                    # no event for "the invoker leased it again" but the log line
                    while not any(e["event"] == "async.lease_expired_in_flight" for e in logs):  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                finish.set()
                with anyio.fail_after(10):
                    while await store.depth("async:f"):  # noqa: ASYNC110 - no change event
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    assert len(calls) == 1, f"invoked {len(calls)} times"
