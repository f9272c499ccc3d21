"""Deprecated: the HTTP server moved to :mod:`eventrun.server` (kept for one release).

``from eventrun.api import build_app, serve_api`` still works and warns; import them from
``eventrun.server`` instead.
"""

from __future__ import annotations

import warnings

from eventrun.server import build_app, serve_api

__all__ = ["build_app", "serve_api"]

warnings.warn(
    "eventrun.api is deprecated and will be removed in the next release; "
    "import build_app and serve_api from eventrun.server",
    DeprecationWarning,
    stacklevel=2,
)
