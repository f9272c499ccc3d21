"""Prometheus metrics for ``GET /metrics`` (prometheus-client); names in docs/metrics.md.

Scraping does no I/O and costs nothing per record: counters that the hot paths already keep
as plain integers (runtime invocation counts, dispatcher, worker pools, async queues, sinks)
are read at scrape time by a custom collector, and store queue depths come from the
:class:`~eventrun.observe._depths.QueueDepths` cache that a background task refreshes. The two
histograms, invocation duration and batch size, are plain numbers too (:class:`Buckets`):
prometheus-client's ``Histogram.observe`` takes a lock per value it adds and cost 1.1 us
per invocation, a bisect and two additions cost 0.2.

Source gauges: pollers report ``statistics()`` keys such as ``lag.<shard>``,
``offset_lag.<shard>`` or ``oldest_pending_age_s``; keys with a known prefix become labelled
gauges (``eventrun_source_lag{function,trigger,shard}``...), the rest stay in the generic
``eventrun_source_gauge{function,trigger,name}``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from eventrun.common import public_destination
from eventrun.observe._view import MetricsView

__all__ = ["Buckets", "RuntimeMetrics", "render_metrics", "source_gauges"]

_DISPATCH_COUNTERS = {
    "polled": ("eventrun_records_polled", "Records taken from the source."),
    "filtered": ("eventrun_records_filtered", "Records dropped by filter_criteria."),
    "invocations": ("eventrun_batch_invocations", "Batch invocations by the dispatcher."),
    "invoke_errors": ("eventrun_batch_errors", "Batch invocations that failed."),
    "succeeded": ("eventrun_records_succeeded", "Records handled successfully."),
    "acked": ("eventrun_records_acked", "Records acknowledged to the source."),
    "released": ("eventrun_records_released", "Records given back to the source unhandled."),
    "retries": ("eventrun_retries", "Retries of failed batches or records."),
    "bisects": ("eventrun_bisects", "Batches split to isolate a failing record."),
    "failed_to_destination": ("eventrun_records_dead_lettered", "Records sent to on_failure."),
    "poll_errors": ("eventrun_source_poll_errors", "Failed polls (broker unavailable)."),
}

# statistics() key prefix -> labelled source gauge (the part after the first dot is the shard)
_SOURCE_KINDS = {
    "lag": "lag",
    "offset_lag": "lag",
    "queue_depth": "lag",
    "oldest_pending_age_s": "oldest_age",
    "oldest_record_age_s": "oldest_age",
    "iterator_age_s": "oldest_age",
    "pending": "pending",
    "in_flight": "pending",
}
_SOURCE_FAMILIES = {
    "lag": ("eventrun_source_lag", "Records not yet read (consumer lag / visible messages)."),
    "oldest_age": (
        "eventrun_source_oldest_record_age_seconds",
        "Age of the oldest unprocessed record (iterator age).",
    ),
    "pending": ("eventrun_source_pending", "Records delivered but not yet acknowledged."),
}
_WORKER_EVENTS = ("timeouts", "crashes", "out_of_memory", "recycled")
_ASYNC_EVENTS = ("queued", "invoked", "succeeded", "retried", "failed", "expired")
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


class Buckets:
    """One histogram series kept as plain numbers, for the collector to expose."""

    __slots__ = ("bounds", "counts", "les", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        # the exposition's le labels, as prometheus-client writes them ("0.001", "1.0")
        self.les = [repr(float(bound)) for bound in bounds] + ["+Inf"]

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, observations <= le)`` pairs as the exposition format has them."""
        out: list[tuple[str, float]] = []
        total = 0
        for le, count in zip(self.les, self.counts, strict=True):
            total += count
            out.append((le, float(total)))
        return out


def source_gauges(
    stats: Mapping[str, Any],
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Split a poller's ``statistics()`` into ``({"lag"|"oldest_age"|"pending": {shard:
    value}}, {other_key: value})``. A total (a key without a shard) is kept, with shard
    ``""``, only when the source reports no per-shard value of that kind, so summing a
    family over shards never counts a record twice. Non-numbers are ignored."""
    shards: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    rest: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        prefix, dot, shard = str(key).partition(".")
        kind = _SOURCE_KINDS.get(prefix)
        if kind is None:
            rest[str(key)] = float(value)
        elif dot:
            shards.setdefault(kind, {})[shard] = float(value)
        else:
            totals[kind] = float(value)
    for kind, value in totals.items():
        shards.setdefault(kind, {"": value})
    return shards, rest


class RuntimeMetrics:
    """The histograms and plain counters a runtime keeps, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.durations: dict[str, Buckets] = {}
        """function -> invocation durations (seconds)."""
        self.batch_sizes: dict[tuple[str, str], Buckets] = {}
        """(function, trigger) -> records per batch invocation."""
        self.invocations: dict[tuple[str, str, str], int] = {}
        """(function, trigger, outcome ``ok``|``error``) -> count."""
        self.throttles: dict[str, int] = {}
        """function -> invocations refused with 429 / FunctionSaturated."""
        self._collector: _Collector | None = None

    def observe_duration(self, function: str, seconds: float) -> None:
        """Record one invocation's duration."""
        series = self.durations.get(function)
        if series is None:
            series = self.durations[function] = Buckets((*_DURATION_BUCKETS, 300, 900))
        series.observe(seconds)

    def batch_size(self, function: str, trigger: str) -> Buckets:
        """The batch size series of a trigger (exposed from now on, zeros included)."""
        series = self.batch_sizes.get((function, trigger))
        if series is None:
            series = self.batch_sizes[(function, trigger)] = Buckets(_BATCH_BUCKETS)
        return series

    def attach(self, runtime: MetricsView) -> None:
        self._collector = _Collector(runtime)
        self.registry.register(self._collector)

    def count(self, function: str, trigger: str, ok: bool) -> None:
        key = (function, trigger, "ok" if ok else "error")
        self.invocations[key] = self.invocations.get(key, 0) + 1

    def throttled(self, function: str) -> None:
        self.throttles[function] = self.throttles.get(function, 0) + 1

    def function_totals(self, function: str) -> dict[str, int]:
        """``{"ok": n, "error": n, "throttled": n}`` over every trigger of ``function``."""
        out = {"ok": 0, "error": 0, "throttled": self.throttles.get(function, 0)}
        for (fn, _trigger, outcome), n in self.invocations.items():
            if fn == function:
                out[outcome] += n
        return out


class _Collector:
    def __init__(self, runtime: MetricsView) -> None:
        self._runtime = runtime

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._histograms()
        yield from self._functions()
        yield from self._dispatch()
        yield from self._queues()

    def _histograms(self) -> Iterator[Metric]:
        metrics = self._runtime.metrics
        duration = HistogramMetricFamily(
            "eventrun_invocation_duration_seconds",
            "Duration of invocations, by function.",
            labels=["function"],
        )
        for function, series in sorted(metrics.durations.items()):
            duration.add_metric([function], series.cumulative(), series.sum)
        yield duration
        sizes = HistogramMetricFamily(
            "eventrun_batch_size_records",
            "Records per batch invocation, by function and trigger.",
            labels=["function", "trigger"],
        )
        for labels, series in sorted(metrics.batch_sizes.items()):
            sizes.add_metric(list(labels), series.cumulative(), series.sum)
        yield sizes

    def _functions(self) -> Iterator[Metric]:
        rt = self._runtime
        inv = CounterMetricFamily(
            "eventrun_invocations",
            "Invocations by function, trigger (a trigger name, api, or async) and outcome.",
            labels=["function", "trigger", "outcome"],
        )
        for (function, trigger, outcome), n in sorted(rt.metrics.invocations.items()):
            inv.add_metric([function, trigger, outcome], float(n))
        throttles = CounterMetricFamily(
            "eventrun_throttles",
            "Invocations refused because every concurrency slot was busy (HTTP 429).",
            labels=["function"],
        )
        cold = CounterMetricFamily(
            "eventrun_cold_starts", "Worker cold starts.", labels=["function"]
        )
        restarts = CounterMetricFamily(
            "eventrun_worker_restarts",
            "Workers replaced, by reason (timeouts, crashes, out_of_memory, recycled).",
            labels=["function", "reason"],
        )
        workers = GaugeMetricFamily(
            "eventrun_workers", "Workers by state.", labels=["function", "state"]
        )
        inflight = GaugeMetricFamily(
            "eventrun_inflight_invocations", "Invocations running now.", labels=["function"]
        )
        saturation = GaugeMetricFamily(
            "eventrun_concurrency_saturation",
            "Busy workers / concurrency (1.0 = saturated; KEDA can scale on it).",
            labels=["function"],
        )
        async_events = CounterMetricFamily(
            "eventrun_async_events",
            "Asynchronous invocations by event (queued, invoked, succeeded, retried...).",
            labels=["function", "event"],
        )
        for name, fn in rt.functions.items():
            throttles.add_metric([name], float(rt.metrics.throttles.get(name, 0)))
            stats: dict[str, Any] = dict(fn.runner.statistics())
            cold.add_metric([name], float(stats.get("cold_starts", 0)))
            for reason in _WORKER_EVENTS:
                restarts.add_metric([name, reason], float(stats.get(reason, 0)))
            busy = float(stats.get("busy", 0))
            workers.add_metric([name, "busy"], busy)
            workers.add_metric([name, "idle"], float(stats.get("idle", 0)))
            inflight.add_metric([name], busy)
            saturation.add_metric([name], busy / max(1, fn.config.concurrency))
            for event in _ASYNC_EVENTS:
                value = getattr(fn.async_invoker.stats, event)
                async_events.add_metric([name, event], float(value))
        yield from (inv, throttles, cold, restarts, workers, inflight, saturation, async_events)

    def _dispatch(self) -> Iterator[Metric]:
        families = {
            key: CounterMetricFamily(name, doc, labels=["function", "trigger"])
            for key, (name, doc) in _DISPATCH_COUNTERS.items()
        }
        held = GaugeMetricFamily(
            "eventrun_records_in_flight",
            "Records in a running batch.",
            labels=["function", "trigger"],
        )
        labelled = {
            kind: GaugeMetricFamily(name, doc, labels=["function", "trigger", "shard"])
            for kind, (name, doc) in _SOURCE_FAMILIES.items()
        }
        generic = GaugeMetricFamily(
            "eventrun_source_gauge",
            "Other source gauges (partitions, delayed messages...) by name.",
            labels=["function", "trigger", "name"],
        )
        for name, src in self._runtime.sources.items():
            if src.dispatcher is None:
                continue
            stats = src.dispatcher.statistics()
            for key, family in families.items():
                family.add_metric([src.function, name], stats.get(key, 0.0))
            held.add_metric([src.function, name], stats.get("in_flight", 0.0))
            if src.poller is None:
                continue
            try:
                raw = dict(src.poller.statistics())
            except Exception:  # a broken statistics() must not break scraping
                raw = {}
            shards, rest = source_gauges(raw)
            for kind, values in shards.items():
                for shard, value in sorted(values.items()):
                    labelled[kind].add_metric([src.function, name, shard], value)
            for gname, value in sorted(rest.items()):
                generic.add_metric([src.function, name, gname], value)
        yield from families.values()
        yield held
        yield from labelled.values()
        yield generic

    def _queues(self) -> Iterator[Metric]:
        rt = self._runtime
        queue = GaugeMetricFamily(
            "eventrun_async_queue_depth",
            "Asynchronous invocations queued in the store (refreshed every few seconds).",
            labels=["function"],
        )
        for name in rt.functions:
            queue.add_metric([name], float(rt.depths.async_depth(name)))
        dlq = GaugeMetricFamily(
            "eventrun_dlq_depth",
            "Entries in each local: queue (DLQs, destinations; refreshed every few seconds).",
            labels=["queue"],
        )
        for name, depth in sorted(rt.depths.local.items()):
            dlq.add_metric([name], float(depth))
        sent = CounterMetricFamily(
            "eventrun_destination_records",
            "Records delivered to a destination or DLQ (sink URL without credentials).",
            labels=["destination"],
        )
        failures = CounterMetricFamily(
            "eventrun_destination_send_failures",
            "Failed sends to a destination (each is retried; nothing is dropped).",
            labels=["destination"],
        )
        full = CounterMetricFamily(
            "eventrun_queue_full",
            "Puts refused because a store queue was at store.max_queue_depth or "
            "max_queue_bytes (429 on the Invoke API; a local: sink retries, keeping the record).",
            labels=["queue"],
        )
        for name, n in sorted(rt.store.full.counts.items()):
            full.add_metric([name], float(n))
        store_failures = CounterMetricFamily(
            "eventrun_store_failures",
            "Store operations that failed, by reason: disk_full (the SQLite file's filesystem "
            "had no space; nothing of the write was kept) or error. An async invoke refused "
            "this way answers 503; pollers retry.",
            labels=["reason"],
        )
        for reason, n in sorted(rt.store.failures.counts.items()):
            store_failures.add_metric([reason], float(n))
        expired = CounterMetricFamily(
            "eventrun_dlq_expired",
            "Entries of local: queues deleted by the retention sweep (store.dlq_retention, "
            "store.dlq_max_depth).",
            labels=["queue"],
        )
        for name, n in sorted(rt.retention.expired.items()):
            expired.add_metric([name], float(n))
        router = rt.router
        if router is not None:
            for family, counts in ((sent, router.sent), (failures, router.failures)):
                merged: dict[str, int] = {}
                for url, n in dict(counts).items():
                    label = public_destination(url)
                    merged[label] = merged.get(label, 0) + n
                for label, n in sorted(merged.items()):
                    family.add_metric([label], float(n))
        yield from (queue, dlq, full, store_failures, expired, sent, failures)


def render_metrics(metrics: RuntimeMetrics) -> tuple[bytes, str]:
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
