"""The plugin seam: what a source or a sink must be.

Built-in sources and sinks implement these Protocols and register through the entry
points ``eventrun.sources`` / ``eventrun.sinks`` exactly as a third-party plugin would::

    [project.entry-points."eventrun.sources"]
    mykind = "mypkg.source:create"      # create(spec: SourceSpec) -> Poller | PushSource

    [project.entry-points."eventrun.sinks"]
    mykind = "mypkg.sink:create"        # create(spec: SinkSpec) -> Sink

There are two kinds of source:

* a :class:`Poller` (SQS, Kafka, Redis Streams) has no loop of its own. The runtime
  drives it with one shared polling loop (backoff, reconnect, backpressure written once)
  and feeds what it returns into the dispatcher, which batches, invokes, retries and
  finally calls :meth:`Poller.ack` or :meth:`Poller.release`.
* a :class:`PushSource` (HTTP, cron, file-watch) runs its own ``serve()`` and hands
  events to the runtime through a :class:`SourceContext`.

A plugin's config models subclass :class:`TriggerModel` (or :class:`BatchControls`, which
adds the dispatcher's keys) and :class:`ConnectionModel`, registered in the entry point
groups ``eventrun.triggers`` / ``eventrun.connections`` (docs/plugins.md). Those four names
come from ``eventrun.config`` on first use, so importing this module stays light.

Nothing here imports a broker client; ``import eventrun`` stays light.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

import anyio
import msgspec
from anyio.abc import TaskStatus

if TYPE_CHECKING:
    from eventrun.config import BatchControls, ConnectionModel, Duration, TriggerModel

__all__ = [
    "BatchControls",
    "Clock",
    "ConnectionModel",
    "Duration",
    "InvokeOutcome",
    "KeyValueState",
    "OutMessage",
    "Poller",
    "PushSource",
    "Record",
    "Route",
    "Sink",
    "SinkSpec",
    "SourceContext",
    "SourceSpec",
    "TriggerModel",
]

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""


class Record(msgspec.Struct, eq=False):
    """One record taken from a poller, ready for the dispatcher.

    The dispatcher never looks inside ``event`` or ``token``; it orders records by
    ``shard`` (and ``key`` when a trigger has ``parallelization_factor`` > 1), filters on
    ``event`` with the data field (``data_key``) decoded from ``data``, and hands the
    records of a batch back to :meth:`Poller.batch_event` to build the Lambda event.

    Build it like a dataclass, positionally or by keyword. It is a ``msgspec.Struct``
    (compared by identity), because a busy poller makes one per message: building and
    freeing one costs about half of what a slotted dataclass does.
    """

    shard: str
    """Ordering unit: Kafka ``topic-partition``, a Redis stream, an SQS FIFO group.
    ``""`` means unordered (SQS standard): each record is independent."""
    item_id: JSON
    """The ``itemIdentifier`` a handler reports in ``batchItemFailures``
    (SQS ``messageId``, Kafka ``{"partition": "t-0", "offset": 5}``, Redis entry id)."""
    event: dict[str, JSON] | msgspec.Struct
    """The Lambda-shaped record, exactly as it appears in the batch event (plain JSON
    types: dict, list, str, int, float, bool, None). An ``inline`` handler receives this
    very object; after a failed invocation the dispatcher puts back a copy as it was
    sent, but after a successful one it is as the handler left it: ``ack`` must not read
    it (use ``item_id`` or ``token``).

    A source may instead give a ``msgspec.Struct`` that msgspec encodes to that record
    (bytes fields become base64, as Lambda's Kafka key and value are): building one
    costs far less than a dict, and a batch for a process worker is encoded straight
    from it. An inline handler then gets a plain copy of the batch event (the record
    keeps its struct); a filter or a failure record gets the dict from
    :meth:`plain_event`, which swaps it in once."""
    data: bytes
    """The payload bytes (SQS body, Kafka value, stream fields as JSON)."""
    data_key: str
    """Name of the field filters match the decoded payload under: body, value, data."""
    timestamp: float
    """Epoch seconds at which the record entered the source (for maximum_record_age)."""
    key: str | None = None
    """Ordering key within the shard for parallelization lanes (Kafka key, key_field)."""
    token: object = None
    """Private to the source: receipt handle, offset, entry id."""
    size: int = 0
    """Bytes counted against the 6 MB invocation payload limit (0: len(data))."""
    attempt: int = 1
    """1-based delivery attempt as far as the broker knows (ApproximateReceiveCount)."""

    def __post_init__(self) -> None:
        if not self.size:
            self.size = len(self.data) + 256

    def plain_event(self) -> dict[str, JSON]:
        """The event as plain JSON types; a struct event is replaced by its dict."""
        event = self.event
        if isinstance(event, dict):
            return event
        plain: dict[str, JSON] = msgspec.to_builtins(event)
        self.event = plain
        return plain


@dataclass(slots=True, frozen=True)
class SourceSpec:
    """What a source factory gets: one trigger of one function, fully validated."""

    kind: str
    name: str
    """Stable trigger id, ``FUNCTION/KIND[INDEX]`` (used for state keys, metrics, logs)."""
    function: str
    config: Any
    """The trigger's validated pydantic model (``eventrun.config.KafkaTrigger``...)."""
    connection: Any = None
    """The named connection the trigger references, validated, or None."""
    config_dir: Path = field(default_factory=Path.cwd)


@dataclass(slots=True, frozen=True)
class SinkSpec:
    """What a sink factory gets: a destination URL and what it refers to."""

    url: str
    """The whole destination, e.g. ``kafka:main/orders-dlq`` or ``local:failed``."""
    kind: str
    target: str
    """The part after ``KIND:`` (``main/orders-dlq``); for http(s), the whole URL."""
    connection: Any = None
    config_dir: Path = field(default_factory=Path.cwd)
    store: Any = None
    """The runtime's durable ``eventrun.store.Store``, for sinks that write into it
    (``local:NAME`` puts into queue ``local:NAME``; ``function:NAME`` into ``async:NAME``)."""


@dataclass(slots=True, frozen=True)
class OutMessage:
    """One message for a sink: a JSON document, keyed like its input."""

    payload: bytes
    key: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Poller(Protocol):
    """A pull source without a loop (SQS, Kafka, Redis Streams).

    ``ordered`` selects the dispatcher's semantics: True is the stream contract
    (records of a shard in order, a failing batch blocks its lane and is retried
    in-process, only the contiguous completed prefix is acknowledged); False is the
    queue contract (each record settles on its own; a failure is released back to the
    broker with a delay and comes back through :meth:`poll`).

    Optional attributes the dispatcher looks for:

    * ``acks_each_record = True`` (ordered pollers whose broker acknowledges records one by
      one, like Redis XACK): acknowledge each record as soon as it completed rather than
      the contiguous completed prefix of its shard.
    * ``on_revoke``: an attribute the dispatcher sets to ``async (shards) -> None``; call it
      when the broker takes shards away (a rebalance) to give back what was buffered.
    * ``extend(records, seconds)`` with ``heartbeat_interval_s``: called periodically for
      every held record (SQS visibility extension).
    * ``on_result(records, payload)``: awaited after a batch (or its successful prefix)
      succeeded, with those records and the handler's JSON result, before they are
      acknowledged (tumbling-window state). Must not raise.

    And one the runtime looks for: a ``state`` attribute that is None is set, before
    ``__aenter__``, to the trigger's :class:`KeyValueState` in the store (checkpoints and
    shard leases of the Kinesis and DynamoDB Streams pollers).
    """

    ordered: bool

    async def __aenter__(self) -> Self:
        """Connect. Raise SourceUnavailable when the broker cannot be reached."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close clients. Records polled but not acked are left to the broker."""
        ...

    async def poll(self, max_records: int) -> Sequence[Record]:
        """Return up to ``max_records`` new records, waiting at most about a second.

        Return an empty sequence when idle. Raise SourceUnavailable on a connection
        problem (the loop backs off and calls again). Records of one shard must be
        returned in shard order across calls.
        """
        ...

    async def ack(self, records: Sequence[Record]) -> None:
        """Acknowledge records that were handled (or moved to a DLQ).

        For ordered pollers the dispatcher passes only a contiguous completed prefix of
        each shard, in order; committing the last one's position is correct (with
        ``acks_each_record``: any completed records).
        """
        ...

    async def release(self, records: Sequence[Record], delay_s: float) -> None:
        """Give records back unhandled: visible again after ``delay_s`` (queues) or left
        pending for a later delivery (streams, on shutdown)."""
        ...

    def batch_event(self, records: Sequence[Record]) -> dict[str, JSON]:
        """The Lambda-shaped event for a batch of this poller's records."""
        ...

    def batch_info(self, records: Sequence[Record]) -> dict[str, JSON]:
        """Source-specific part of a Lambda failure record (``KafkaBatchInfo``...)."""
        ...

    def statistics(self) -> Mapping[str, float]:
        """Gauges for metrics: lag, oldest record age, queue depth... (may be empty)."""
        ...


@dataclass(slots=True, frozen=True)
class InvokeOutcome:
    """The result of invoking a function, as a push source sees it."""

    request_id: str
    ok: bool
    payload: bytes
    """The handler's JSON return value, or Lambda's error JSON when not ok."""
    function_error: str | None = None
    """``Unhandled`` when the handler failed (the X-Amz-Function-Error header)."""
    log_tail: str = ""
    duration_s: float = 0.0


@dataclass(slots=True, frozen=True)
class Route:
    """An HTTP route a push source mounts on the daemon's one server."""

    path: str
    methods: tuple[str, ...]
    endpoint: Callable[..., Awaitable[Any]]
    """A Starlette-style ``async def endpoint(request) -> Response``."""
    auth: bool = True
    """Require the server's bearer token (False only for ``auth: none`` triggers)."""
    respond: Callable[..., Awaitable[Any]] | None = None
    """Optional ``async def respond(scope, receive) -> Response``: what ``endpoint`` does,
    from the raw ASGI scope. The server calls it directly, skipping Starlette's routing
    and request layers, when present; ``endpoint`` must then be ``respond`` applied to
    ``request.scope, request.receive`` so both paths behave the same."""


class Clock(Protocol):
    """The only place time is read; ``eventrun.testing.FakeClock`` implements it."""

    def time(self) -> float:
        """Wall clock, epoch seconds."""
        ...

    def monotonic(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``monotonic() >= deadline``."""
        ...

    def wake_at(self, deadline: float, event: anyio.Event) -> Callable[[], None]:
        """Set ``event`` once ``monotonic() >= deadline``, without a task (a timer: what a
        dispatcher lane waiting out its batching window uses); returns a function that
        cancels it."""
        ...


class KeyValueState(Protocol):
    """Small durable state for a source (file-watch cursors, cron ticks), in the store."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def claim(self, key: str, ttl_s: float) -> bool:
        """Set ``key`` if absent, expiring after ``ttl_s``; True when this caller won.

        Used for once-per-tick cron across replicas.
        """
        ...

    async def release(self, key: str) -> None:
        """Give up a claim this caller won and still holds (before its TTL ran out), so
        another caller may win it at once: a replica handing its shard leases over on a
        clean shutdown. A value written with :meth:`set` is left alone."""
        ...


class SourceContext(Protocol):
    """What the runtime offers a push source."""

    spec: SourceSpec
    clock: Clock
    state: KeyValueState

    async def invoke(
        self, event: JSON, *, log_tail: bool = False, stream: Callable[[bytes], None] | None = None
    ) -> InvokeOutcome:
        """Invoke the trigger's function synchronously (RequestResponse).

        ``stream``, when given, takes a response the function streams (Lambda's
        ``RESPONSE_STREAM``: a Runtime API function posting in streaming mode) chunk by
        chunk as it arrives, before this returns, in Lambda's HTTP-integration form: a
        JSON prelude (``statusCode``, ``headers``, ``cookies``), 8 NUL bytes, then the
        body. The outcome's payload is then empty when ok; not ok, the stream ended
        early (an error the function reported, a timeout, over 20 MB). A function that
        answers whole (every Python one) never calls it.

        Raises FunctionSaturated when every concurrency slot is busy.
        """
        ...

    async def invoke_async(self, event: JSON) -> str:
        """Queue an asynchronous invocation durably; returns its request id."""
        ...

    def add_route(self, route: Route) -> None:
        """Mount an HTTP route on the daemon's server (before ``task_status.started()``)."""
        ...


@runtime_checkable
class PushSource(Protocol):
    """A source with its own loop (HTTP, cron, file-watch)."""

    async def serve(self, ctx: SourceContext, *, task_status: TaskStatus[None]) -> None:
        """Run until cancelled, handing events to ``ctx``.

        Call ``task_status.started()`` once listening/watching/scheduled. Never swallow
        cancellation; handler failures arrive as outcomes, not exceptions.
        """
        ...


@runtime_checkable
class Sink(Protocol):
    """A destination: success/failure destinations, DLQs, pipeline outputs."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Deliver every message durably, or raise.

        Raise SinkUnavailable when the destination is down (the caller keeps the
        messages and retries with backoff), SinkRejected when it refuses them.
        """
        ...


SourceFactory = Callable[[SourceSpec], "Poller | PushSource"]
SinkFactory = Callable[[SinkSpec], Sink]
Family = Literal["stream", "queue"]


_CONFIG_NAMES = frozenset({"BatchControls", "ConnectionModel", "Duration", "TriggerModel"})


def __getattr__(name: str) -> Any:
    """The config base models, imported from ``eventrun.config`` on first use."""
    if name not in _CONFIG_NAMES:
        raise AttributeError(f"module 'eventrun.abc' has no attribute {name!r}")
    import eventrun.config

    value = getattr(eventrun.config, name)
    globals()[name] = value
    return value
