"""The daemon's web status page (``GET /``): server-rendered HTML with a little JavaScript.

The page shows functions, triggers, recent errors and DLQ contents with redrive buttons; its
script polls ``GET /status`` every 2 s for live counts and rates, and redrives through
``POST /dlq/{queue}/redrive``. Template, CSS and script live in ``eventrun/web/``.

Auth (when the server has bearer tokens): a browser cannot send a bearer header, so the page
accepts the token once, as ``?token=`` or from its login form, answers with an HttpOnly,
SameSite=Strict session cookie (:class:`eventrun.server._guards.Sessions`: expiring, signed with a
per-start secret, revoked by ``POST /logout``; never the token) and redirects to a clean
URL. :class:`eventrun.server._api._Auth` accepts that cookie for the admin routes only. Sign-in and
sign-out refuse another site's requests, failed sign-ins are rate-limited per client, and
the page is filled in one pass (a ``{{SLOT}}`` inside data stays text). Responses carry a
nonce-based Content-Security-Policy, ``Referrer-Policy: same-origin`` (no referrer leaves
the daemon; ``no-referrer`` would make the browser send ``Origin: null`` with the page's
own form posts, which the cross-site check refuses) and ``Cache-Control: no-store``.
See docs/security.md.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import structlog
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from eventrun.asgi import SESSION_COOKIE, first_headers
from eventrun.common import public_destination
from eventrun.observe import sparkline
from eventrun.server._guards import SESSION_TTL_S, admin_write_refusal
from eventrun.store import dlq as _dlq

if TYPE_CHECKING:
    from eventrun.server._api import _Auth
    from eventrun.server._view import ServedRuntime

__all__ = ["SESSION_COOKIE", "session_cookie", "web_routes"]

log = structlog.get_logger("eventrun.server.web")

ENTRIES_SHOWN = 20


def session_cookie(scope: Scope) -> str | None:
    """The session cookie's value, from every ``Cookie`` header (None: no session)."""
    value = None
    key = SESSION_COOKIE.encode()
    for name, raw in scope["headers"]:
        if name == b"cookie" and key in raw:
            value = cookie_parser(raw.decode("latin-1")).get(SESSION_COOKIE, value)
    return value


_LOGOUT = (
    '<form method="post" action="/logout" id="logout"><button type="submit">Sign out</button>'
    "</form>"
)
_SLOT = re.compile(r"\{\{([A-Z]+)\}\}")


def _asset(name: str) -> str:
    return resources.files("eventrun.server.web").joinpath(name).read_text(encoding="utf-8")


def _headers(nonce: str) -> dict[str, str]:
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _page(
    title: str,
    body: str,
    *,
    status: int = 200,
    script: bool = False,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    js = f'<script nonce="{nonce}">{_asset("status.js")}</script>' if script else ""
    slots = {
        "TITLE": escape(title),
        "NONCE": nonce,
        "CSS": _asset("status.css"),
        "BODY": body,
        "SCRIPT": js,
    }
    # one pass over the template: a "{{SCRIPT}}" inside the data stays text
    html = _SLOT.sub(lambda m: slots[m[1]], _asset("page.html"))
    return HTMLResponse(html, status_code=status, headers={**_headers(nonce), **(headers or {})})


def _login(
    error: str = "", status: int = 401, headers: dict[str, str] | None = None
) -> HTMLResponse:
    message = f'<p class="badge bad">{escape(error)}</p>' if error else ""
    body = f"""
<main class="login"><h1>eventrun</h1>
<p>This daemon requires a bearer token.</p>{message}
<form method="post" action="/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></main>"""
    return _page("eventrun: sign in", body, status=status, headers=headers)


def _signed_in(request: Request, value: str, max_age: int) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _badge(ok: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"good" if ok else "bad"}">{escape(yes if ok else no)}</span>'


def _functions(doc: dict[str, Any]) -> str:
    rows = []
    for name, fn in sorted(doc["functions"].items()):
        w = fn.get("workers", {})
        inv = fn.get("invocations", {})
        n = escape(name)
        rows.append(
            f'<tr data-fn="{n}"><td><b>{n}</b></td><td>{escape(str(fn.get("runtime")))}</td>'
            f'<td class="num" data-k="workers">{w.get("busy", 0)} / {w.get("workers", 0)}</td>'
            f'<td class="num" data-k="in_flight">{fn.get("in_flight", 0)}</td>'
            f'<td class="num">{fn.get("concurrency")}</td>'
            f'<td class="num" data-k="ok">{inv.get("ok", 0)}</td>'
            f'<td class="num" data-k="error">{inv.get("error", 0)}</td>'
            f'<td class="num" data-k="throttled">{inv.get("throttled", 0)}</td>'
            f'<td class="num" data-k="rate">&ndash;</td>'
            f'<td class="num" data-k="async">{fn.get("async_queue_depth", 0)}</td></tr>'
        )
    head = (
        "<tr><th>Function</th><th>Runtime</th><th>Busy / workers</th><th>In flight</th>"
        "<th>Concurrency</th><th>OK</th><th>Errors</th><th>Throttled</th><th>Rate /s</th>"
        "<th>Async queued</th></tr>"
    )
    return f'<table id="functions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _triggers(doc: dict[str, Any]) -> str:
    rows = []
    for name, src in sorted(doc["sources"].items()):
        n = escape(name)
        state = _badge(src.get("started", False), "running", src.get("error") or "starting")
        lag = src.get("lag", {}).get("total", "")
        rows.append(
            f'<tr data-src="{n}"><td>{n}</td><td>{escape(src["kind"])}</td>'
            f'<td>{escape(src["function"])}</td><td data-k="state">{state}</td>'
            f'<td class="num" data-k="lag">{lag}</td></tr>'
        )
    if not rows:
        return '<p class="muted">No triggers: invoke functions through the API.</p>'
    head = "<tr><th>Trigger</th><th>Kind</th><th>Function</th><th>State</th><th>Lag</th></tr>"
    return f'<table id="triggers"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _errors(doc: dict[str, Any]) -> str:
    items = []
    for name, fn in sorted(doc["functions"].items()):
        for err in reversed(fn.get("recent_errors", [])):
            detail = json.dumps(err.get("error", err), indent=2)
            items.append(
                f"<details><summary><b>{escape(name)}</b> "
                f'<span class="badge bad">{escape(str(err.get("errorType")))}</span> '
                f"<code>{escape(str(err.get('requestId')))}</code></summary>"
                f"<pre>{escape(detail)}</pre></details>"
            )
    return "".join(items) or '<p class="muted">No errors recently.</p>'


def _dlq_section(queues: dict[str, int], entries: dict[str, list[dict[str, Any]]]) -> str:
    if not any(queues.values()):
        return '<p class="muted" id="dlq-empty">Every dead-letter queue is empty.</p>'
    parts = []
    for queue, depth in sorted(queues.items()):
        if not depth:
            continue
        q = escape(queue)
        rows = []
        for e in entries.get(queue, []):
            eid = escape(e["id"])
            payload = escape(json.dumps(e.get("payload"), indent=2)[:4000])
            rows.append(
                f"<tr><td><code>{eid}</code></td><td>{escape(str(e.get('function')))}</td>"
                f"<td>{escape(str(e.get('condition') or e['kind']))}</td>"
                f"<td>{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['enqueued_at']))}</td>"
                f"<td><details><summary>payload</summary><pre>{payload}</pre></details></td>"
                f'<td><button class="redrive" data-queue="{q}" data-id="{eid}">Redrive</button>'
                "</td></tr>"
            )
        more = (
            f'<p class="muted">{depth - len(rows)} more not shown.</p>' if depth > len(rows) else ""
        )
        parts.append(
            f'<section class="queue" data-queue="{q}"><h3>{q} '
            f'<span class="badge warn" data-k="depth">{depth}</span> '
            f'<button class="redrive" data-queue="{q}">Redrive all</button></h3>'
            "<table><thead><tr><th>Id</th><th>Function</th><th>Condition</th><th>Enqueued</th>"
            f"<th></th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</section>"
        )
    return "".join(parts)


def _charts(series: dict[str, Any]) -> str:
    """The 'Last 15 minutes' cards: invocations and errors per function, lag per
    trigger, depth per DLQ, each an inline SVG sparkline (``status.js`` redraws them)."""
    every = f"{series['interval_s']:g} s"
    cards = []

    def card(key: str, title: str, values: list[Any], kind: str) -> None:
        svg = sparkline(values, label=title, kind=kind)
        cards.append(
            f'<figure class="chart" data-series="{escape(key)}">{svg}'
            f"<figcaption>{escape(title)}</figcaption></figure>"
        )

    for name, fn in series["functions"].items():
        card(
            f"functions/{name}/invocations",
            f"{name}: invocations / {every}",
            fn["invocations"],
            "calls",
        )
        card(f"functions/{name}/errors", f"{name}: errors / {every}", fn["errors"], "errors")
    for name, values in series["lag"].items():
        card(f"lag/{name}", f"{name}: lag", values, "lag")
    for queue, values in series["dlq"].items():
        card(f"dlq/{queue}", f"{queue}: depth", values, "dlq")
    if not cards:
        return '<p class="muted">No samples yet.</p>'
    return f'<div id="charts" class="charts">{"".join(cards)}</div>'


async def _status_body(runtime: ServedRuntime, signed_in: bool) -> str:
    doc = runtime.statistics()
    queues = await _dlq.list_queues(runtime.store)
    entries = {
        q: await _dlq.list_entries(runtime.store, q, limit=ENTRIES_SHOWN)
        for q in queues
        if queues[q]
    }
    sinks = ""
    if runtime.router is not None and runtime.router.sent:
        sent = ", ".join(
            f"{escape(public_destination(u))}: {n}" for u, n in sorted(runtime.router.sent.items())
        )
        sinks = f'<p class="muted">Delivered to destinations: {sent}</p>'
    ready = _badge(doc["ready"], "ready", "starting")
    return f"""
<header><h1>eventrun</h1>{ready}<span class="muted" id="uptime">up {doc["uptime_s"]:.0f} s</span>
<span class="muted" id="updated"></span>{_LOGOUT if signed_in else ""}</header>
<main id="page" data-rendered-at="{time.time():.3f}">
<h2>Functions</h2>{_functions(doc)}
<h2>Last 15 minutes</h2>{_charts(runtime.history.series())}
<h2>Triggers</h2>{_triggers(doc)}
<h2>Dead-letter queues</h2><div id="dlq">{_dlq_section(queues, entries)}</div>{sinks}
<p id="redrive-result" class="muted" role="status"></p>
<h2>Recent errors</h2><div id="errors">{_errors(doc)}</div>
</main>"""


def _refused(request: Request) -> Response | None:
    """403 for a sign-in or sign-out another site's page could have sent."""
    refusal = admin_write_refusal(first_headers(request.scope), form_ok=True)
    return None if refusal is None else JSONResponse({"message": refusal}, status_code=403)


def _sign_in(request: Request, auth: _Auth, token: str) -> Response:
    """A session for a valid token; failures count against the client's address and,
    past :class:`eventrun.server._guards.LoginLimiter`'s budget, get 429 without a check."""
    client = request.client.host if request.client else ""
    wait_s = auth.logins.blocked(client)
    if wait_s:
        log.warning("web.login_throttled", client=client, retry_in_s=round(wait_s, 1))
        return _login(
            "Too many failed sign-ins; try again later.",
            status=429,
            headers={"Retry-After": str(math.ceil(wait_s))},
        )
    if auth.valid_token(token.encode()):
        return _signed_in(request, auth.sessions.issue(token.encode()), SESSION_TTL_S)
    auth.logins.failed(client)
    return _login("That token is not valid.")


def web_routes(runtime: ServedRuntime, auth: _Auth) -> list[Route]:
    """``GET /`` (the page), ``GET /status/history`` (its charts' data), ``POST /login``,
    ``POST /logout``."""

    async def index(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            if not auth.enabled:
                return RedirectResponse("/", status_code=303)  # keep tokens out of the URL
            return _sign_in(request, auth, token)
        if not auth.ok(request):
            return _login(status=401)
        return _page("eventrun status", await _status_body(runtime, auth.enabled), script=True)

    async def history(request: Request) -> Response:
        return JSONResponse(runtime.history.series())

    async def login(request: Request) -> Response:
        refused = _refused(request)
        if refused is not None:
            return refused
        form = parse_qs((await request.body()).decode(errors="replace"))
        token = (form.get("token") or [""])[0]
        if not auth.enabled:
            return RedirectResponse("/", status_code=303)
        return _sign_in(request, auth, token)

    async def logout(request: Request) -> Response:
        refused = _refused(request)
        if refused is not None:
            return refused
        value = session_cookie(request.scope)
        if value is not None:
            auth.sessions.revoke(value)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        Route("/", index, methods=["GET"]),
        Route("/status/history", auth.guard_admin(history), methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
