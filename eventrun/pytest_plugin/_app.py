"""A user's app run in-process for a test: the real runtime in a thread of its own.

:class:`EventrunApp` starts :class:`~eventrun.runtime.Runtime` from an ``eventrun.yaml``
on an event loop in a background thread (an anyio blocking portal), so a plain test and
an ``async`` test (any event loop) can both drive it. The store is SQLite in a temporary
directory, the HTTP server listens on a free loopback port, and broker triggers and
destinations are in memory (:mod:`eventrun.pytest_plugin._fakes`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from eventrun import plugins as _plugins
from eventrun.abc import OutMessage, PushSource, SinkSpec, SourceSpec
from eventrun.config import LoadedConfig, load_config
from eventrun.dispatch import default_dlq
from eventrun.exceptions import EventrunError
from eventrun.pytest_plugin._fakes import REAL_SINKS, Bus, BusSink, FakeSource, as_message
from eventrun.pytest_plugin._fakes import fake_source as _fake_source
from eventrun.runtime import Runtime
from eventrun.testing import FakeClock

__all__ = ["EventrunApp", "Invocation", "QueuedEntry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Invocation:
    """The outcome of a synchronous invocation."""

    request_id: str
    ok: bool
    raw: bytes
    logs: str
    error_type: str | None

    @property
    def payload(self) -> Any:
        """The handler's return value (or Lambda's error document), JSON-decoded."""
        return json.loads(self.raw) if self.raw else None


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """One entry of a store queue (a DLQ or a ``local:`` destination)."""

    id: str
    raw: bytes
    meta: Mapping[str, Any]

    @property
    def payload(self) -> Any:
        return json.loads(self.raw)


class EventrunApp:
    """A running app. Every method is plain (blocking); the ``a``-prefixed ones are
    coroutines for ``async`` tests."""

    def __init__(
        self,
        config: Path,
        *,
        state_dir: Path,
        environ: Mapping[str, str] | None = None,
        fake_clock: bool = False,
    ) -> None:
        self.config_path = config
        self._state_dir = state_dir
        self._environ = environ
        self._fake_clock = fake_clock
        self.bus = Bus()
        self.sources: dict[str, FakeSource] = {}
        """The in-memory poller of each broker trigger, by trigger name."""
        self.clock: FakeClock | None = None
        self.runtime: Runtime | None = None
        self._stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._stop: anyio.Event | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> EventrunApp:
        loaded = _for_tests(load_config(self.config_path, self._environ), self._state_dir)
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
        try:
            self._portal.call(self._create, loaded)
            assert self.runtime is not None
            assert self._stop is not None
            future, _ = self._portal.start_task(self.runtime.serve, self._stop)
            self._served = future
            self._portal.call(self._until_ready)
        except BaseException:
            self._stack.close()
            raise
        return self

    async def _create(self, loaded: LoadedConfig) -> None:
        self.clock = FakeClock() if self._fake_clock else None
        self._stop = anyio.Event()
        self.runtime = Runtime(
            loaded,
            port=0,
            clock=self.clock,
            async_retry_delay_s=None,
            source_factory=self._make_source,
            sink_factory=self._make_sink,
        )

    async def _until_ready(self) -> None:
        assert self.runtime is not None
        with anyio.fail_after(30):
            await self.runtime.ready.wait()

    def stop(self) -> None:
        if self._portal is not None and self._stop is not None:
            self._portal.call(self._stop.set)
            with contextlib.suppress(Exception):
                self._served.result(timeout=60)
        self._stack.close()
        self._portal = None

    def _make_source(self, spec: SourceSpec) -> Any:
        real = _plugins.source_factory(spec.kind)(spec)
        if isinstance(real, PushSource):
            return real
        assert self.runtime is not None
        source = _fake_source(spec, self.runtime.clock.time)
        self.sources[spec.name] = source
        self.bus.subscribe(spec, source)
        return source

    def _make_sink(self, spec: SinkSpec) -> Any:
        if spec.kind in REAL_SINKS:
            return _plugins.sink_factory(spec.kind)(spec)
        return BusSink(spec, self.bus)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._portal is None:
            raise RuntimeError("the eventrun app is not running")
        return self._portal.call(fn, *args)

    async def _acall(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(self._call, fn, *args)

    # -- what a test does -------------------------------------------------------------

    @property
    def url(self) -> str:
        """The HTTP server's base URL (Invoke API, function URLs, /metrics, /status)."""
        assert self.runtime is not None
        return f"http://127.0.0.1:{self.runtime.bound_port}"

    def invoke(
        self, function: str, event: Any = None, *, invocation_type: str = "RequestResponse"
    ) -> Any:
        """Invoke ``function`` with ``event`` (a JSON value, or bytes): an
        :class:`Invocation` for ``RequestResponse``, the request id for ``Event``
        (queued; :meth:`settle` waits for it to finish)."""
        return self._call(self._invoke, function, event, invocation_type)

    async def ainvoke(
        self, function: str, event: Any = None, *, invocation_type: str = "RequestResponse"
    ) -> Any:
        """:meth:`invoke` for ``async`` tests."""
        return await self._acall(self._invoke, function, event, invocation_type)

    async def _invoke(self, function: str, event: Any, invocation_type: str) -> Any:
        assert self.runtime is not None
        if function not in self.runtime.functions:
            names = ", ".join(sorted(self.runtime.functions))
            raise KeyError(f"no function {function!r} in {self.config_path.name} (have: {names})")
        payload = event if isinstance(event, bytes) else json.dumps(event or {}).encode()
        if invocation_type == "Event":
            return await self.runtime.enqueue(function, payload)
        if invocation_type != "RequestResponse":
            raise ValueError(f"invocation_type {invocation_type!r}: use RequestResponse or Event")
        r = await self.runtime.invoke(function, payload)
        return Invocation(r.request_id, r.ok, r.payload, r.logs, r.error_type)

    def feed(self, trigger: str, records: Iterable[Any], *, wait: bool = True) -> list[str]:
        """Put ``records`` into the in-memory source of ``trigger`` (a trigger name like
        ``orders/sqs[0]``, or a function name with one broker trigger). Each record is a
        :class:`Message`, a str/bytes body or a JSON value. With ``wait``, returns once
        every record (and whatever the pipeline made of it) is settled: handled and
        acknowledged, or sent to its ``on_failure``. Returns the ids of the records."""
        source = self.source(trigger)
        ids = self._call(self._feed, source, [as_message(r) for r in records])
        if wait:
            self.settle()
        return list(ids)

    async def afeed(self, trigger: str, records: Iterable[Any], *, wait: bool = True) -> list[str]:
        """:meth:`feed` for ``async`` tests."""
        source = self.source(trigger)
        ids = await self._acall(self._feed, source, [as_message(r) for r in records])
        if wait:
            await self.asettle()
        return list(ids)

    async def _feed(self, source: FakeSource, messages: list[Any]) -> list[str]:
        return [source.feed(m) for m in messages]

    def publish(self, url: str, records: Iterable[Any], *, wait: bool = True) -> None:
        """Send ``records`` to a broker destination URL (``kafka:main/orders``) as a
        producer would: every in-memory trigger reading it gets them."""
        messages = [as_message(r) for r in records]
        out = [OutMessage(m.data(), m.key, m.attributes) for m in messages]
        self._call(self._publish, url, out)
        if wait:
            self.settle()

    async def _publish(self, url: str, out: list[OutMessage]) -> None:
        self.bus.deliver(url, out)

    def source(self, trigger: str) -> FakeSource:
        """The in-memory poller of a trigger (its ``committed`` offsets, ``deleted``
        messages... are the broker's view)."""
        if trigger in self.sources:
            return self.sources[trigger]
        mine = [s for name, s in self.sources.items() if name.split("/")[0] == trigger]
        if len(mine) == 1:
            return mine[0]
        known = ", ".join(sorted(self.sources)) or "none"
        raise KeyError(f"no single broker trigger {trigger!r} (broker triggers: {known})")

    def settle(self, timeout_s: float = 30.0) -> None:
        """Wait until every in-memory source is settled and the async queues are empty."""
        self._call(self._settle, timeout_s)

    async def asettle(self, timeout_s: float = 30.0) -> None:
        await self._acall(self._settle, timeout_s)

    async def _settle(self, timeout_s: float) -> None:
        assert self.runtime is not None
        with anyio.fail_after(timeout_s):
            while True:
                busy = [s for s in self.sources.values() if not s.settled()]
                if busy:  # woken by its next ack; re-checked at least every 50 ms
                    with anyio.move_on_after(0.05):
                        await busy[0].wait_until(busy[0].settled)
                elif await self._async_idle():
                    return
                else:
                    await anyio.sleep(0.01)

    async def _async_idle(self) -> bool:
        assert self.runtime is not None
        for name in self.runtime.functions:
            if await self.runtime.store.depth(f"async:{name}"):
                return False
        return all(s.settled() for s in self.sources.values())

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Wait until ``predicate()`` (called in the test's thread) holds: for what
        happens after :meth:`advance` (a cron tick's run), re-checked every 20 ms."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout_s} s: {predicate}")
            time.sleep(0.02)

    def advance(self, seconds: float) -> None:
        """Move the fake clock (the ``eventrun_clock`` fixture) forward: cron ticks,
        batching windows and retry delays due by then happen."""
        self._call(self._advance, seconds)

    async def aadvance(self, seconds: float) -> None:
        await self._acall(self._advance, seconds)

    async def _advance(self, seconds: float) -> None:
        if self.clock is None:
            raise RuntimeError("the app runs on the system clock: request eventrun_clock")
        await self.clock.advance(seconds)

    def sent(self, url: str) -> list[Any]:
        """JSON-decoded payloads sent to a broker destination (``kafka:main/out``...)."""
        return [_decode(m.payload) for m in self.bus.sent.get(url, [])]

    def queue(self, name: str) -> list[QueuedEntry]:
        """Entries of a store queue, oldest first (``local:NAME``)."""
        return list(self._call(self._queue, name))

    def dlq(self, function: str) -> list[Any]:
        """The failure records in ``function``'s default DLQ (``local:FUNCTION-dlq``)."""
        return [e.payload for e in self.queue(default_dlq(function))]

    async def _queue(self, name: str) -> list[QueuedEntry]:
        assert self.runtime is not None
        entries = await self.runtime.store.peek(name, limit=10_000)
        return [QueuedEntry(e.id, e.payload, dict(e.meta)) for e in entries]


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _for_tests(loaded: LoadedConfig, state_dir: Path) -> LoadedConfig:
    """The config with the embedded store in ``state_dir`` and the server on loopback."""
    cfg = loaded.config
    store = cfg.store.model_copy(update={"url": f"sqlite:///{state_dir / 'state.db'}"})
    server = cfg.server.model_copy(update={"host": "127.0.0.1"})
    return replace(loaded, config=cfg.model_copy(update={"store": store, "server": server}))


def start_app(
    config: Path, state_dir: Path, environ: Mapping[str, str] | None, fake_clock: bool
) -> EventrunApp:
    try:
        return EventrunApp(
            config, state_dir=state_dir, environ=environ, fake_clock=fake_clock
        ).start()
    except EventrunError as exc:
        raise RuntimeError(f"the eventrun app did not start: {exc}") from exc
