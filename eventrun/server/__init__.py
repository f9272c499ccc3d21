"""The HTTP server: one ASGI app on one port for the Invoke API, function URLs, health,
metrics, OpenAPI, the DLQ API and the status page.

What it does: serves Starlette routes (with a fast path for the hot ones and a one-write
uvicorn protocol), guards the socket (request head deadline and size, connection caps),
checks bearer tokens in constant time, Host and CSRF headers, and renders the status page
from its static assets in ``eventrun/server/web/``.

May import: ``eventrun.observe``, ``eventrun.store``, ``eventrun.config``, the seam and
``eventrun.common``. It never imports the runtime: it is handed a
:class:`~eventrun.server.ServedRuntime`, the read-only view of what it serves.

Exports: ``serve_api``, ``build_app``, ``load_tokens``, ``ServedRuntime``.
"""

from __future__ import annotations

from eventrun.server._api import build_app, load_tokens, serve_api
from eventrun.server._view import ServedRuntime

__all__ = ["ServedRuntime", "build_app", "load_tokens", "serve_api"]
