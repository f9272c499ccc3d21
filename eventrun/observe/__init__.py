"""Observability: logging set-up, Prometheus metrics and cached queue depths.

What it does: configures structlog once (JSON off a TTY, one line per event, secrets
redacted), defines the daemon's metrics and renders ``/metrics``, and keeps the store's
queue depths cached so a scrape never waits on the store.

May import: ``eventrun.store``, ``eventrun.abc``, ``eventrun.exceptions``,
``eventrun.common``; it reads the runtime only through the narrow view it is handed
(:class:`~eventrun.observe.MetricsView`), never the runtime itself.

Exports: ``configure_logging``, ``quiet_logging``, ``RuntimeMetrics``, ``MetricsView``,
``render_metrics``, ``source_gauges``, ``QueueDepths``.
"""

from __future__ import annotations

from eventrun.observe._depths import QueueDepths
from eventrun.observe._logging import configure_logging, quiet_logging
from eventrun.observe._metrics import RuntimeMetrics, render_metrics, source_gauges
from eventrun.observe._view import MetricsView

__all__ = [
    "MetricsView",
    "QueueDepths",
    "RuntimeMetrics",
    "configure_logging",
    "quiet_logging",
    "render_metrics",
    "source_gauges",
]
