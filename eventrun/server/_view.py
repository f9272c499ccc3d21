"""What the HTTP server sees of the daemon: a read-only view, not the runtime.

The server answers for functions, sources and queues it does not own. It is handed any
object with these attributes (the runtime is one; a test can build a small one), so it
depends on a shape, never on :class:`~eventrun.runtime.Runtime` and what that imports.
The one attribute the server writes is ``bound_port``, once the socket is bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio

from eventrun.abc import Route
from eventrun.config import Config
from eventrun.observe import History, RuntimeMetrics
from eventrun.store import Store
from eventrun.workers import InvokeResult

__all__ = ["ServedFunction", "ServedRuntime", "ServedSource"]


class Enqueuer(Protocol):
    """A function's queue of asynchronous invocations."""

    async def enqueue(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        trigger: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str: ...


class ServedFunction(Protocol):
    """One function, as far as the DLQ API's redrive needs it."""

    @property
    def async_invoker(self) -> Enqueuer: ...


class ServedSource(Protocol):
    """One trigger's source: ``/readyz`` waits for every one to have started."""

    @property
    def started(self) -> bool: ...


class Sent(Protocol):
    """Messages delivered per destination URL (the status page's pipeline line)."""

    @property
    def sent(self) -> Mapping[str, int]: ...


class ServedRuntime(Protocol):
    """The daemon as the server sees it."""

    bound_port: int | None
    """The port the server is listening on; set by :func:`~eventrun.server.serve_api`."""

    @property
    def port(self) -> int:
        """The configured port (0: any free one)."""

    @property
    def config(self) -> Config: ...

    @property
    def ready(self) -> anyio.Event: ...

    @property
    def functions(self) -> Mapping[str, ServedFunction]: ...

    @property
    def sources(self) -> Mapping[str, ServedSource]: ...

    @property
    def routes(self) -> Sequence[Route]: ...

    @property
    def store(self) -> Store: ...

    @property
    def router(self) -> Sent | None: ...

    @property
    def metrics(self) -> RuntimeMetrics: ...

    @property
    def history(self) -> History:
        """The last 15 minutes of samples (the status page's charts)."""

    def statistics(self) -> dict[str, Any]: ...

    async def enqueue(self, function: str, payload: bytes) -> str: ...

    async def invoke(
        self,
        function: str,
        payload: bytes,
        *,
        wait: bool = True,
        request_id: str | None = None,
        client_context: dict[str, Any] | None = None,
        trigger: str = "api",
        log_done: bool = True,
        event: Any = None,
    ) -> InvokeResult: ...
