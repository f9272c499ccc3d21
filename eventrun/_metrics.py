"""Prometheus metrics for ``GET /metrics`` (prometheus-client).

Counters that the hot paths already keep as plain integers (dispatcher, worker pools, async
queues, sinks) are read at scrape time by a custom collector, so scraping costs nothing per
record. Two histograms are observed directly: invocation duration and batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from eventrun._runtime import Runtime

__all__ = ["RuntimeMetrics", "render_metrics"]

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


class RuntimeMetrics:
    """The histograms a runtime observes directly, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "eventrun_invocation_duration_seconds",
            "Duration of invocations, by function.",
            ["function"],
            registry=self.registry,
            buckets=(
                0.001,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                300,
                900,
            ),
        )
        self.batch_size = Histogram(
            "eventrun_batch_size_records",
            "Records per batch invocation, by function and trigger.",
            ["function", "trigger"],
            registry=self.registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000),
        )
        self._collector: _Collector | None = None

    def attach(self, runtime: Runtime) -> None:
        self._collector = _Collector(runtime)
        self.registry.register(self._collector)


class _Collector:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime
        inv = CounterMetricFamily(
            "eventrun_invocations",
            "Invocations by function and outcome.",
            labels=["function", "outcome"],
        )
        cold = CounterMetricFamily(
            "eventrun_cold_starts", "Worker cold starts.", labels=["function"]
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
        queue = GaugeMetricFamily(
            "eventrun_async_queue_depth", "Asynchronous invocations queued.", labels=["function"]
        )
        for name, fn in rt.functions.items():
            stats: dict[str, Any] = dict(fn.runner.statistics())
            total = float(stats.get("invocations", 0))
            errors = float(stats.get("errors", 0))
            inv.add_metric([name, "ok"], total - errors)
            inv.add_metric([name, "error"], errors)
            cold.add_metric([name], float(stats.get("cold_starts", 0)))
            busy = float(stats.get("busy", 0))
            workers.add_metric([name, "busy"], busy)
            workers.add_metric([name, "idle"], float(stats.get("idle", 0)))
            inflight.add_metric([name], busy)
            saturation.add_metric([name], busy / max(1, fn.config.concurrency))
            a = fn.async_invoker.stats
            queue.add_metric([name], float(max(0, a.queued - a.succeeded - a.failed - a.expired)))
        yield from (inv, cold, workers, inflight, saturation, queue)
        yield from self._dispatch()

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
        source = GaugeMetricFamily(
            "eventrun_source_gauge",
            "Source gauges (lag, oldest record age, depth...) by name.",
            labels=["function", "trigger", "name"],
        )
        for name, src in self._runtime.sources.items():
            if src.dispatcher is None:
                continue
            stats = src.dispatcher.statistics()
            for key, family in families.items():
                family.add_metric([src.function, name], stats.get(key, 0.0))
            held.add_metric([src.function, name], stats.get("in_flight", 0.0))
            if src.poller is not None:
                try:
                    gauges = dict(src.poller.statistics())
                except Exception:  # a broken statistics() must not break scraping
                    gauges = {}
                for gname, value in gauges.items():
                    if isinstance(value, int | float):
                        source.add_metric([src.function, name, gname], float(value))
        yield from families.values()
        yield held
        yield source


def render_metrics(runtime: Runtime) -> tuple[bytes, str]:
    return generate_latest(runtime.metrics.registry), CONTENT_TYPE_LATEST
