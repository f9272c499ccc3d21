"""The runtime: one daemon's functions, sources, store, sinks and HTTP server.

:meth:`Runtime.serve` owns the root task group. Start-up order: store, sinks, the zygote
(the process that forks every ``runtime: process`` function's workers), function
runners (``min_warm`` workers initialised), async-invocation queues, push sources (HTTP
routes, cron, file-watch), pollers (each connects with backoff; the daemon is *ready* once
every source started), then the HTTP server. Shutdown is driven by a ``stop`` event (the
CLI turns SIGTERM/SIGINT into it) and phased: stop push sources and intake, let in-flight
batches and async invocations finish within ``shutdown_grace``, release what is unfinished
(SQS visibility 0, Kafka uncommitted, Redis pending), close runners, the zygote and
sinks, exit.

Why this module is over 500 lines: it is the one place that wires config to components
(runners, async invokers, dispatchers, push-source contexts, destinations, metrics) and
owns their lifecycle; the pieces themselves live in their own modules. Splitting the
wiring would spread one start-up/shutdown sequence over several files.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from eventrun import plugins as _plugins
from eventrun.abc import (
    Clock,
    InvokeOutcome,
    Poller,
    PushSource,
    Route,
    SinkSpec,
    SourceSpec,
)
from eventrun.config import FunctionConfig, LoadedConfig, TriggerConfig, hidden_env
from eventrun.dispatch import (
    AsyncInvoker,
    AsyncSettings,
    Backoff,
    DispatchSettings,
    Publisher,
    RecordFilter,
    SinkRouter,
    TriggerDispatcher,
    default_dlq,
)
from eventrun.exceptions import FunctionSaturated, SourceError
from eventrun.observe import (
    History,
    MemTrace,
    QueueDepths,
    RuntimeMetrics,
    invoke_span,
    record_carrier,
    source_gauges,
    tracing_enabled,
)
from eventrun.runtime._clock import SystemClock
from eventrun.runtime._gc import tuned_gc
from eventrun.runtime._reload import host_runner, reload_runtime
from eventrun.store import DlqRetention, Store, open_configured_store
from eventrun.workers import (
    FunctionRunner,
    InvokeResult,
    Zygote,
    code_directory,
    function_environment,
    open_zygote,
    runs_python_workers,
)

__all__ = ["FunctionHandle", "Runtime"]

log = structlog.get_logger("eventrun.runtime")
_ENCODER = msgspec.json.Encoder()


@dataclass(slots=True)
class FunctionHandle:
    """A configured function at run time."""

    name: str
    config: FunctionConfig
    runner: FunctionRunner
    async_invoker: AsyncInvoker
    triggers: list[str] = field(default_factory=list)
    recent_errors: list[dict[str, Any]] = field(default_factory=list)

    def note_error(self, result: InvokeResult) -> None:
        doc = {"requestId": result.request_id, "errorType": result.error_type}
        with contextlib.suppress(ValueError):
            doc["error"] = json.loads(result.payload)
        self.recent_errors.append(doc)
        del self.recent_errors[:-20]


@dataclass(slots=True)
class SourceState:
    name: str
    kind: str
    function: str
    started: bool = False
    error: str | None = None
    dispatcher: TriggerDispatcher | None = None
    poller: Poller | None = None


class _KV:
    """A source's slice of the store's key/value space (``KeyValueState``)."""

    def __init__(self, store: Store, prefix: str, clock: Clock) -> None:
        self._store = store
        self._prefix = prefix
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        return await self._store.kv_get(self._prefix + key)

    async def set(self, key: str, value: bytes) -> None:
        await self._store.kv_set(self._prefix + key, value)

    async def claim(self, key: str, ttl_s: float) -> bool:
        return await self._store.kv_claim(self._prefix + key, ttl_s, now=self._clock.time())

    async def release(self, key: str) -> None:
        await self._store.kv_release(self._prefix + key)


class _PushContext:
    """What a push source sees of the runtime (``eventrun.abc.SourceContext``)."""

    def __init__(self, runtime: Runtime, spec: SourceSpec, fn: FunctionHandle) -> None:
        self.spec = spec
        self.clock = runtime.clock
        self.state = _KV(runtime.store, f"source:{spec.name}:", runtime.clock)
        self._runtime = runtime
        self._fn = fn

    async def invoke(
        self, event: Any, *, log_tail: bool = False, stream: Callable[[bytes], None] | None = None
    ) -> InvokeOutcome:
        result = await self._runtime.invoke(
            self._fn.name,
            _ENCODER.encode(event),
            wait=False,
            trigger=self.spec.name,
            trace_carrier=record_carrier(event) if tracing_enabled() else None,
            stream=stream,
        )
        # a trigger's on_success gets the outputs of synchronous runs too (a streamed
        # response, passed on already, has none)
        if result.ok and result.payload:
            await self._fn.async_invoker.publish_outputs(self.spec.name, result.payload)
        return InvokeOutcome(
            request_id=result.request_id,
            ok=result.ok,
            payload=result.payload,
            function_error=None if result.ok else "Unhandled",
            log_tail=result.logs if log_tail else "",
            duration_s=result.duration_s,
        )

    async def invoke_async(self, event: Any) -> str:
        return await self._fn.async_invoker.enqueue(_ENCODER.encode(event), trigger=self.spec.name)

    def add_route(self, route: Route) -> None:
        self._runtime.routes.append(route)


class Runtime:
    """Everything one ``eventrun run`` process does."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock | None = None,
        port: int | None = None,
        serve_http: bool = True,
        async_retry_delay_s: float | None = None,
        source_factory: Callable[[SourceSpec], Any] | None = None,
        sink_factory: Callable[[SinkSpec], Any] | None = None,
    ) -> None:
        """``source_factory`` / ``sink_factory`` replace the plugin registry's factories
        (the pytest plugin swaps brokers for in-memory sources and sinks with them)."""
        self.loaded = loaded
        self._source_factory = source_factory
        self._sink_factory = sink_factory
        self.config = loaded.config
        self.clock: Clock = clock or SystemClock()
        self.port = self.config.server.port if port is None else port
        self.serve_http = serve_http
        self._retry_delay = async_retry_delay_s
        self.functions: dict[str, FunctionHandle] = {}
        self.sources: dict[str, SourceState] = {}
        self.routes: list[Route] = []
        self.store: Store = open_configured_store(self.config.store, config_dir=loaded.dir)
        self.router: SinkRouter | None = None
        self.bound_port: int | None = None
        self.ready = anyio.Event()
        self.started_at = 0.0
        self.metrics = RuntimeMetrics()
        self.metrics.attach(self)
        self.depths = QueueDepths()
        self.history = History()
        self.retention = DlqRetention(
            self.clock,
            max_age_s=self.config.store.dlq_retention,
            max_depth=self.config.store.dlq_max_depth,
        )
        self._serving = False
        self._runners: TaskGroup | None = None
        self.zygote: Zygote | None = None
        self._retire: dict[str, anyio.Event] = {}

    # -- invocation ---------------------------------------------------------------

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
        trace_carrier: Mapping[str, str] | None = None,
        stream: Callable[[bytes], None] | None = None,
    ) -> InvokeResult:
        """Synchronous invocation; raises FunctionSaturated when ``wait`` is False and
        every concurrency slot is busy. ``trigger`` labels the invocation in metrics (a
        trigger name, ``api`` or ``async``); ``log_done=False`` logs the runner's
        ``invoke.done`` at debug level (for callers that log the outcome themselves).
        ``trace_carrier``: the caller's propagation headers (an HTTP request's)."""
        fn = self.functions[function]
        try:
            if tracing_enabled():
                with invoke_span(function, trigger, trace_carrier) as span:
                    result = await fn.runner.invoke(
                        payload,
                        request_id=request_id,
                        wait=wait,
                        client_context=client_context,
                        log_done=log_done,
                        event=event,
                        stream=stream,
                    )
                    span.set_attribute("faas.invocation_id", result.request_id)
                    if not result.ok:
                        span.set_attribute("error.type", result.error_type or "Unhandled")
            else:  # the hot path: no context manager when traces are off
                result = await fn.runner.invoke(
                    payload,
                    request_id=request_id,
                    wait=wait,
                    client_context=client_context,
                    log_done=log_done,
                    event=event,
                    stream=stream,
                )
        except FunctionSaturated:
            self.metrics.throttled(function)
            raise
        self.metrics.observe_duration(function, result.duration_s)
        self.metrics.count(function, trigger, result.ok)
        if not result.ok:
            fn.note_error(result)
        return result

    async def enqueue(self, function: str, payload: bytes) -> str:
        return await self.functions[function].async_invoker.enqueue(payload)

    def statistics(self) -> dict[str, Any]:
        """The JSON status document (functions, workers, sources, queues)."""
        functions = {}
        for name, fn in self.functions.items():
            functions[name] = {
                "runtime": fn.config.runtime,
                "concurrency": fn.config.concurrency,
                "workers": dict(fn.runner.statistics()),
                "async": dict(vars_of(fn.async_invoker.stats)),
                "triggers": fn.triggers,
                "recent_errors": fn.recent_errors[-5:],
                "invocations": self.metrics.function_totals(name),
                "in_flight": fn.runner.statistics().get("busy", 0),
                "async_queue_depth": self.depths.async_depth(name),
            }
        sources = {}
        for name, src in self.sources.items():
            doc: dict[str, Any] = {
                "kind": src.kind,
                "function": src.function,
                "started": src.started,
                "error": src.error,
            }
            if src.dispatcher is not None:
                doc["dispatch"] = src.dispatcher.statistics()
            if src.poller is not None:
                with contextlib.suppress(Exception):
                    doc["source"] = dict(src.poller.statistics())
                doc["lag"] = _lag_summary(doc.get("source", {}))
            sources[name] = doc
        return {
            "ready": self.ready.is_set(),
            "uptime_s": round(self.clock.time() - self.started_at, 3),
            "functions": functions,
            "sources": sources,
            "dlq": dict(self.depths.local),
            "queues_refreshed_at": self.depths.refreshed_at,
            "zygote": self.zygote.statistics() if self.zygote is not None else None,
        }

    # -- lifecycle ----------------------------------------------------------------

    async def serve(
        self,
        stop: anyio.Event,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until ``stop`` is set, then shut down in phases.

        Raises :class:`ConfigError` before starting anything when the server would be
        open to the network without bearer tokens."""
        if self.serve_http:
            from eventrun.server import load_tokens

            load_tokens(self, warn=False)
        self.started_at = self.clock.time()
        grace = self.config.shutdown_grace
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.store)
            self.router = await stack.enter_async_context(
                SinkRouter(
                    connections=self.config.connections,
                    config_dir=self.loaded.dir,
                    store=self.store,
                    factory=self._sink_factory,
                )
            )
            await self._start_functions(stack)
            async with anyio.create_task_group() as tg:
                for fn in self.functions.values():
                    await tg.start(fn.async_invoker.run)
                self.depths.watch(self.functions, self._local_queues())
                await tg.start(self.depths.run, self.store)
                await tg.start(self.history.run, self.statistics, self.clock.time)
                if self.retention.enabled:
                    await tg.start(self.retention.run, self.store)
                push_scopes: list[anyio.CancelScope] = []
                pollers: list[SourceState] = []
                await self._start_sources(tg, push_scopes, pollers)
                if self.serve_http:
                    await tg.start(self._serve_http)
                # start-up is over: what exists now lives as long as the daemon
                stack.enter_context(tuned_gc())
                memtrace = MemTrace.from_env()
                if memtrace is not None:  # a soak's diagnostic, after start-up
                    await tg.start(memtrace.run)
                self._serving = True
                self._check_ready()
                log.info(
                    "runtime.started",
                    functions=len(self.functions),
                    sources=len(self.sources),
                    port=self.bound_port,
                )
                task_status.started()
                await stop.wait()
                log.info("shutdown.begin", grace_s=grace)
                for scope in push_scopes:
                    scope.cancel()
                with anyio.move_on_after(grace) as grace_scope:
                    async with anyio.create_task_group() as drain:
                        for src in pollers:
                            if src.dispatcher is not None:
                                drain.start_soon(src.dispatcher.shutdown, grace)
                        for fn in self.functions.values():
                            fn.async_invoker.stop_intake()
                            drain.start_soon(fn.async_invoker.drain)
                if grace_scope.cancelled_caught:
                    log.warning("shutdown.grace_exceeded", grace_s=grace)
                tg.cancel_scope.cancel()
        log.info("shutdown.complete")

    def _source_started(self, state: SourceState) -> None:
        state.started = True
        state.error = None
        self._check_ready()

    def _check_ready(self) -> None:
        if (
            self._serving
            and not self.ready.is_set()
            and all(s.started for s in self.sources.values())
        ):
            self.ready.set()
            log.info("runtime.ready", sources=sorted(self.sources))

    async def start_runner(
        self, name: str, cfg: FunctionConfig, retire: anyio.Event
    ) -> FunctionRunner:
        """Start a runner for ``name`` in a task of its own, closed once ``retire`` is set
        and its in-flight invocations finished (see ``eventrun.runtime._reload``)."""
        assert self._runners is not None
        hidden = hidden_env(self.config)
        # create_runner resolves the function's code: directory against the config's
        runner: FunctionRunner = await self._runners.start(
            host_runner, name, cfg, self.loaded.dir, hidden, retire, self.zygote
        )
        return runner

    def swap_runner(
        self, name: str, cfg: FunctionConfig, runner: FunctionRunner, retire: anyio.Event
    ) -> anyio.Event:
        """Route ``name``'s new invocations to ``runner``; return the old one's retire
        event (set it to retire the old runner)."""
        fn = self.functions[name]
        fn.runner, fn.config = runner, cfg
        old, self._retire[name] = self._retire[name], retire
        return old

    async def reload(self, loaded: LoadedConfig, *, code_changed: bool = False) -> list[str]:
        """Apply a new, validated config to the running daemon; see ``_reload``."""
        return await reload_runtime(self, loaded, code_changed=code_changed)

    def _retire_all(self) -> None:
        for event in self._retire.values():
            event.set()

    async def _start_zygote(self, stack: contextlib.AsyncExitStack) -> None:
        """The one zygote that forks every ``runtime: process`` function's workers; left
        after the runners (the stack unwinds in reverse), so it outlives their drain."""
        hidden = hidden_env(self.config)
        envs = [
            function_environment(
                name, cfg, code_directory(cfg, self.loaded.dir), "us-east-1", hidden=hidden
            )
            for name, cfg in self.config.functions.items()
            if runs_python_workers(cfg)
        ]
        if envs:
            self.zygote = await stack.enter_async_context(open_zygote(envs))

    async def _start_functions(self, stack: contextlib.AsyncExitStack) -> None:
        assert self.router is not None
        await self._start_zygote(stack)
        self._runners = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._retire_all)
        for name, cfg in self.config.functions.items():
            self._retire[name] = anyio.Event()
            runner = await self.start_runner(name, cfg, self._retire[name])
            retry_delay = self._retry_delay
            if retry_delay is None:
                retry_delay = cfg.retry_delay
            settings = AsyncSettings(
                function=name,
                concurrency=cfg.concurrency,
                timeout_s=cfg.timeout,
                maximum_retry_attempts=cfg.maximum_retry_attempts,
                maximum_event_age_s=cfg.maximum_event_age,
                retry_delay_s=retry_delay,
            )
            dest = cfg.destinations
            on_failure = self.router.publisher(dest.on_failure or default_dlq(name))
            assert on_failure is not None
            invoker = AsyncInvoker(
                settings,
                self._async_invoke_fn(name),
                self.store,
                clock=self.clock,
                on_success=self.router.publisher(dest.on_success),
                on_failure=on_failure,
                outputs=self._trigger_outputs(name, cfg),
            )
            self.functions[name] = FunctionHandle(name, cfg, runner, invoker)

    def _trigger_outputs(self, name: str, cfg: FunctionConfig) -> dict[str, Publisher]:
        """Each trigger's ``on_success`` publisher by trigger id, for async invocations
        queued on a trigger's behalf (cron, file-watch, DLQ redrives)."""
        assert self.router is not None
        outputs: dict[str, Publisher] = {}
        for i, trig in enumerate(cfg.triggers):
            publisher = self.router.publisher(getattr(trig.spec, "on_success", None))
            if publisher is not None:
                outputs[f"{name}/{trig.kind}[{i}]"] = publisher
        return outputs

    def _async_invoke_fn(self, name: str) -> Any:
        async def _invoke(payload: bytes, *, request_id: str) -> InvokeResult:
            return await self.invoke(
                name, payload, wait=True, request_id=request_id, trigger="async"
            )

        return _invoke

    def trigger_specs(self) -> list[tuple[str, SourceSpec, TriggerConfig]]:
        out = []
        for fname, cfg in self.config.functions.items():
            for i, trig in enumerate(cfg.triggers):
                name = f"{fname}/{trig.kind}[{i}]"
                connection = self.config.connection_for(
                    trig.kind, getattr(trig.spec, "connection", None)
                )
                spec = SourceSpec(
                    kind=trig.kind,
                    name=name,
                    function=fname,
                    config=trig.spec,
                    connection=connection,
                    config_dir=self.loaded.dir,
                )
                out.append((fname, spec, trig))
        return out

    async def _start_sources(
        self, tg: Any, push_scopes: list[anyio.CancelScope], pollers: list[SourceState]
    ) -> None:
        for fname, spec, _trig in self.trigger_specs():
            fn = self.functions[fname]
            fn.triggers.append(spec.name)
            make = self._source_factory or _plugins.source_factory(spec.kind)
            source = make(spec)
            state = SourceState(spec.name, spec.kind, fname)
            self.sources[spec.name] = state
            if isinstance(source, PushSource):
                ctx = _PushContext(self, spec, fn)
                scope = anyio.CancelScope()
                push_scopes.append(scope)
                await tg.start(self._run_push, source, ctx, state, scope)
            else:
                if getattr(source, "state", False) is None:  # a poller asking for the store
                    kv = _KV(self.store, f"source:{spec.name}:", self.clock)
                    setattr(source, "state", kv)  # noqa: B010 (an optional Poller attribute)
                state.poller = source
                state.dispatcher = TriggerDispatcher(
                    source,
                    self._dispatch_settings(fname, spec),
                    self._batch_invoke_fn(fname, spec.name),
                    clock=self.clock,
                    on_failure=self._poller_on_failure(fname, spec),
                    on_success=self._on_success(spec),
                    on_batch=self.metrics.batch_size(fname, spec.name).observe,
                )
                pollers.append(state)
                tg.start_soon(self._run_poller, state)

    async def _run_push(
        self,
        source: PushSource,
        ctx: _PushContext,
        state: SourceState,
        scope: anyio.CancelScope,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                await tg.start(source.serve, ctx)
                self._source_started(state)
                task_status.started()

    async def _run_poller(self, state: SourceState) -> None:
        assert state.poller is not None
        assert state.dispatcher is not None
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        attempt = 0
        while True:
            try:
                async with state.poller:
                    self._source_started(state)
                    await state.dispatcher.run()
                    return
            except SourceError as exc:
                attempt += 1
                state.error = str(exc)
                delay = backoff.delay(attempt)
                log.warning(
                    "source.connect_failed", source=state.name, error=str(exc), retry_in_s=delay
                )
                await anyio.sleep(delay)

    def _batch_invoke_fn(self, name: str, trigger: str) -> Any:
        async def _invoke(payload: bytes, *, event: Any = None) -> InvokeResult:
            # The dispatcher logs one batch.done line per batch: invoke.done goes to debug.
            return await self.invoke(
                name, payload, wait=True, trigger=trigger, log_done=False, event=event
            )

        return _invoke

    def _dispatch_settings(self, fname: str, spec: SourceSpec) -> DispatchSettings:
        c = spec.config
        criteria = getattr(c, "filter_criteria", None)
        patterns = criteria.patterns if criteria is not None else []
        return DispatchSettings(
            function=fname,
            trigger=spec.name,
            batch_size=c.batch_size,
            window_s=c.maximum_batching_window,
            parallelization_factor=getattr(c, "parallelization_factor", 1),
            bisect=getattr(c, "bisect_batch_on_function_error", False),
            max_retry_attempts=getattr(c, "maximum_retry_attempts", -1),
            share_events=self.config.functions[fname].runtime == "inline",
            max_record_age_s=getattr(c, "maximum_record_age", -1.0),
            report_batch_item_failures=c.report_batch_item_failures,
            filter=RecordFilter(patterns) if patterns else None,
            max_receive_count=getattr(c, "max_receive_count", None),
            queue_lanes=getattr(c, "maximum_concurrency", None)
            or self.config.functions[fname].concurrency,
        )

    def _local_queues(self) -> list[str]:
        """Every ``local:`` queue the config names as a plain destination, and the
        default DLQs (reported at depth 0 until something arrives)."""
        names = {default_dlq(name) for name in self.config.functions}
        for cfg in self.config.functions.values():
            values = [cfg.destinations.on_failure, cfg.destinations.on_success]
            for trig in cfg.triggers:
                values += [getattr(trig.spec, "on_failure", None)]
                values += [getattr(trig.spec, "on_success", None)]
            for value in values:
                urls = value if isinstance(value, list | tuple) else [value]
                names.update(u for u in urls if isinstance(u, str) and u.startswith("local:"))
        return sorted(names)

    def _poller_on_failure(self, fname: str, spec: SourceSpec) -> Publisher | None:
        assert self.router is not None
        dest = getattr(spec.config, "on_failure", None)
        return self.router.publisher(dest or default_dlq(fname))

    def _on_success(self, spec: SourceSpec) -> Publisher | None:
        assert self.router is not None
        return self.router.publisher(getattr(spec.config, "on_success", None))

    async def _serve_http(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        from eventrun.server import serve_api

        await serve_api(self, task_status=task_status)


def _lag_summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``{"total", "oldest_age_s", "shards": {shard: lag}}`` from a poller's statistics."""
    shards, _rest = source_gauges(stats)
    lag = shards.get("lag", {})
    ages = shards.get("oldest_age", {})
    return {
        "total": sum(lag.values()),
        "oldest_age_s": max(ages.values(), default=0.0),
        "shards": lag,
    }


def vars_of(obj: Any) -> Mapping[str, Any]:
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
