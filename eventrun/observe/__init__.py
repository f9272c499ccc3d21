"""Observability: logging set-up, Prometheus metrics and cached queue depths.

What it does: configures structlog once (JSON off a TTY, one line per event, secrets
redacted), defines the daemon's metrics and renders ``/metrics``, and keeps the store's
queue depths cached so a scrape never waits on the store; OpenTelemetry spans per batch
and invocation when the ``OTEL_*`` variables ask for them (``_tracing``).

May import: ``eventrun.store``, ``eventrun.abc``, ``eventrun.exceptions``,
``eventrun.common``; it reads the runtime only through the narrow view it is handed
(:class:`~eventrun.observe.MetricsView`), never the runtime itself.

Exports: ``configure_logging``, ``quiet_logging``, ``RuntimeMetrics``, ``MetricsView``,
``render_metrics``, ``source_gauges``, ``QueueDepths``, ``History`` and ``sparkline``
(the status page's 15-minute charts), ``MemTrace`` (tracemalloc snapshots for soaks,
``EVENTRUN_TRACEMALLOC``), and the tracing helpers
(``configure_tracing``, ``batch_span``, ``invoke_span``, ``with_trace``...).
"""

from __future__ import annotations

from eventrun.observe._depths import QueueDepths
from eventrun.observe._history import History, sparkline
from eventrun.observe._logging import configure_logging, quiet_logging
from eventrun.observe._memtrace import MemTrace
from eventrun.observe._metrics import RuntimeMetrics, render_metrics, source_gauges
from eventrun.observe._tracing import (
    async_span,
    attached,
    batch_span,
    configure_tracing,
    invoke_span,
    record_carrier,
    shutdown_tracing,
    trace_attributes,
    tracing_enabled,
    with_trace,
)
from eventrun.observe._view import MetricsView

__all__ = [
    "History",
    "MemTrace",
    "MetricsView",
    "QueueDepths",
    "RuntimeMetrics",
    "async_span",
    "attached",
    "batch_span",
    "configure_logging",
    "configure_tracing",
    "invoke_span",
    "quiet_logging",
    "record_carrier",
    "render_metrics",
    "shutdown_tracing",
    "source_gauges",
    "sparkline",
    "trace_attributes",
    "tracing_enabled",
    "with_trace",
]
