"""The ``eventrun`` command line (click): run, check, invoke, schema, generate-event,
status, dlq.

What it does: turns arguments into a config and a :class:`~eventrun.runtime.Runtime`, signals
into its stop event, and error classes into exit codes and one clear ``error:`` line.

May import: everything below it (the top layer).

Exports: ``main`` (the console script).
"""

from __future__ import annotations

from eventrun.cli._main import (
    main,
)

__all__ = [
    "main",
]
