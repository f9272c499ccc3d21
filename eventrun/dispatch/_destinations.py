"""Destinations: sinks opened by URL, publishing with retries, fan-out and routing.

A destination is a URL (``local:NAME``, ``kafka:main/topic``...), a list of URLs (fan-out)
or a routing rule (``{route: {field: type, order: URL, ...}, default: URL}``). Sending never
drops a message: :class:`SinkRouter.send` retries a sink that is down with backoff until it
accepts (the caller's record stays unacknowledged meanwhile); a message the destination
rejects outright is kept in the store's ``local:eventrun-undeliverable`` queue instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import msgspec
import structlog

from eventrun import plugins as _plugins
from eventrun.abc import OutMessage, Sink, SinkSpec
from eventrun.common import public_destination
from eventrun.dispatch._backoff import Backoff
from eventrun.exceptions import SinkError, SinkRejected, StoreError
from eventrun.observe import with_trace

__all__ = ["Publisher", "SinkRouter", "split_url"]

log = structlog.get_logger("eventrun.destinations")

UNDELIVERABLE = "local:eventrun-undeliverable"
_CONNECTION_GROUP = {"kafka": "kafka", "redis": "redis", "sqs": "sqs", "kinesis": "kinesis"}


def split_url(url: str) -> tuple[str, str]:
    """``kafka:main/t`` -> (``kafka``, ``main/t``); ``https://x`` -> (``https``, ``https://x``)."""
    kind, _, rest = url.partition(":")
    if kind in ("http", "https"):
        return kind, url
    return kind, rest


class SinkRouter:
    """Opens each destination's sink once, on first use, and closes them all on exit."""

    def __init__(
        self,
        *,
        connections: Any,
        config_dir: Path,
        store: Any,
        backoff: Backoff | None = None,
        factory: Callable[[SinkSpec], Sink] | None = None,
    ) -> None:
        """``factory`` replaces the plugin registry's sink factories (tests)."""
        self._factory = factory
        self._connections = connections
        self._config_dir = config_dir
        self._store = store
        self._backoff = backoff or Backoff(base_s=0.2, cap_s=30.0)
        self._sinks: dict[str, Sink] = {}
        self._lock = anyio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self.sent: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self._stack.aclose()

    def spec(self, url: str) -> SinkSpec:
        kind, target = split_url(url)
        connection = None
        group = _CONNECTION_GROUP.get(kind, kind)  # a plugin kind: its own section
        if self._connections is not None:
            name = target.partition("/")[0]
            connection = getattr(self._connections, group, {}).get(name)
        return SinkSpec(
            url=url,
            kind=kind,
            target=target,
            connection=connection,
            config_dir=self._config_dir,
            store=self._store,
        )

    async def sink(self, url: str) -> Sink:
        sink = self._sinks.get(url)
        if sink is not None:
            return sink
        async with self._lock:
            if url not in self._sinks:
                spec = self.spec(url)
                make = self._factory or _plugins.sink_factory(spec.kind)
                created = make(spec)
                self._sinks[url] = await self._stack.enter_async_context(created)
            return self._sinks[url]

    async def send(self, url: str, messages: Sequence[OutMessage]) -> None:
        """Deliver ``messages`` to ``url``, retrying until the sink accepts them."""
        attempt = 0
        while True:
            try:
                sink = await self.sink(url)
                await sink.send(messages)
                self.sent[url] = self.sent.get(url, 0) + len(messages)
                return
            except SinkRejected as exc:
                log.error(
                    "sink.rejected",
                    destination=public_destination(url),
                    error=str(exc),
                    size=len(messages),
                )
                await self._keep_undeliverable(url, messages, str(exc))
                return
            except SinkError as exc:
                attempt += 1
                self.failures[url] = self.failures.get(url, 0) + 1
                delay = self._backoff.delay(attempt)
                log.warning(
                    "sink.send_failed",
                    destination=public_destination(url),
                    error=str(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await anyio.sleep(delay)

    async def _keep_undeliverable(
        self, url: str, messages: Sequence[OutMessage], error: str
    ) -> None:
        attempt = 0
        while True:
            try:
                await self._store.put(
                    UNDELIVERABLE,
                    [m.payload for m in messages],
                    meta={"destination": public_destination(url), "error": error},
                )
                return
            except StoreError as exc:
                attempt += 1
                log.warning("store.put_failed", error=str(exc), attempt=attempt)
                await anyio.sleep(self._backoff.delay(attempt))

    def publisher(self, destination: Any) -> Publisher | None:
        """A :class:`Publisher` for a destination value from the config, or None."""
        if destination is None:
            return None
        return Publisher(self, destination)


class Publisher:
    """Publishes to one configured destination: a URL, a fan-out list or a routing rule."""

    def __init__(self, router: SinkRouter, destination: Any) -> None:
        self._router = router
        self._destination = destination

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        messages = with_trace(messages)  # the current trace context, as traceparent
        dest = self._destination
        if isinstance(dest, str):
            await self._router.send(dest, messages)
        elif isinstance(dest, list | tuple):
            for url in dest:
                await self._router.send(url, messages)
        else:
            for url, group in _route(dest, messages).items():
                await self._router.send(url, group)


def _route(rule: Any, messages: Sequence[OutMessage]) -> dict[str, list[OutMessage]]:
    field: str = rule.field
    routes: Mapping[str, str] = rule.routes
    default: str | None = rule.default
    out: dict[str, list[OutMessage]] = {}
    for message in messages:
        try:
            doc = msgspec.json.decode(message.payload)
        except msgspec.DecodeError:
            doc = None
        value = doc.get(field) if isinstance(doc, dict) else None
        url = routes.get(str(value)) if value is not None else None
        url = url or default or "local:unrouted"
        out.setdefault(url, []).append(message)
    return out
