"""The common part of the ``local:`` and ``function:`` sinks: a put into a store queue."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from eventrun.abc import SinkSpec
from eventrun.exceptions import ConfigError, SinkUnavailable, StoreError

__all__ = ["StoreQueueSink", "queue_name"]


def queue_name(spec: SinkSpec, prefix: str, what: str) -> str:
    """``PREFIX:TARGET``, after checking the target names something and a store exists."""
    name = spec.target.strip()
    if not name or "/" in name:
        raise ConfigError(f"{spec.url}: expected {spec.kind}:NAME (a {what} name), got {name!r}")
    if spec.store is None:
        raise ConfigError(f"{spec.url}: the {spec.kind}: sink needs the runtime's store")
    return f"{prefix}:{name}"


class StoreQueueSink:
    """A :class:`eventrun.abc.Sink` that puts each message's payload into one store queue.

    A put is committed before :meth:`send` returns; a store failure raises SinkUnavailable,
    so the caller keeps the messages and sends them again (at-least-once).
    """

    def __init__(self, spec: SinkSpec, queue: str) -> None:
        self.url = spec.url
        self.queue = queue
        self._store: Any = spec.store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def _put(self, payloads: Sequence[bytes], meta: Mapping[str, Any]) -> None:
        try:
            await self._store.put(self.queue, payloads, meta=meta)
        except StoreError as exc:
            raise SinkUnavailable(f"{self.url}: the store failed: {exc}") from exc
