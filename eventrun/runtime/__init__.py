"""The runtime: one daemon's sources, dispatchers, workers, store and HTTP server, wired
from a config and run under one task group.

What it does: starts everything in order (store, workers, server, sources), hands each
part the narrow view it needs, drains in phases on its stop event, and exposes
``invoke``/``enqueue`` for the Invoke API and the CLI.

May import: the server, dispatch, sources (through ``eventrun.plugins``), sinks (likewise),
workers, store, observe, config and the seam; only the CLI and the pytest plugin import
the runtime.

Exports: ``Runtime``, ``FunctionHandle``, ``serve_reloads`` (SIGHUP and ``--reload``).
"""

from __future__ import annotations

from eventrun.runtime._reload import serve_reloads
from eventrun.runtime._runtime import FunctionHandle, Runtime

__all__ = ["FunctionHandle", "Runtime", "serve_reloads"]
