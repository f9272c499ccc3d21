"""``eventrun status``: a live terminal table of a running daemon (rich), or one JSON document.

The table is redrawn every second from ``GET /status``; rates are the difference between
two successive snapshots divided by the time between them, so the daemon keeps only plain
counters. Rendering (:func:`render`) is a pure function of two snapshots.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from eventrun.common import one_line
from eventrun.exceptions import EventrunError

__all__ = ["daemon_url", "render", "status"]

DEFAULT_URL = "http://127.0.0.1:9000"


def daemon_url(url: str | None, config: str) -> str:
    """``--url``, else the config's ``server`` (a wildcard host means this machine), else
    ``http://127.0.0.1:9000``."""
    if url:
        return url
    if not Path(config).exists():
        return DEFAULT_URL
    from eventrun.config import load_config

    server = load_config(config).config.server
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def _rate(now: dict[str, Any], before: dict[str, Any] | None, dt: float, *path: str) -> str:
    if before is None or dt <= 0:
        return "-"
    a: Any = now
    b: Any = before
    for key in path:
        a = a.get(key, {}) if isinstance(a, dict) else {}
        b = b.get(key, {}) if isinstance(b, dict) else {}
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return "-"
    return f"{max(0.0, (a - b) / dt):.1f}"


def render(doc: dict[str, Any], previous: dict[str, Any] | None = None, dt: float = 0.0) -> Any:
    """A rich renderable: functions, triggers and DLQs; rates against ``previous``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ready = Text("ready", style="bold green") if doc.get("ready") else Text("starting", "yellow")
    title = Text.assemble("eventrun  ", ready, f"  up {doc.get('uptime_s', 0):.0f} s")
    fns = Table(title="Functions", title_justify="left", expand=True)
    for col in ("Function", "Workers warm/busy", "In flight", "Invocations/s", "Errors/s"):
        fns.add_column(col, justify="left" if col == "Function" else "right")
    for col in ("Errors", "Throttled", "Async queued"):
        fns.add_column(col, justify="right")
    prev_fns = (previous or {}).get("functions", {})
    for name, fn in sorted(doc.get("functions", {}).items()):
        workers = fn.get("workers", {})
        inv = fn.get("invocations", {})
        before = prev_fns.get(name)
        total = {"n": inv.get("ok", 0) + inv.get("error", 0)}
        total_before = None
        if before is not None:
            b = before.get("invocations", {})
            total_before = {"n": b.get("ok", 0) + b.get("error", 0)}
        errors = inv.get("error", 0)
        fns.add_row(
            name,
            f"{workers.get('idle', 0)}/{workers.get('busy', 0)}",
            str(fn.get("in_flight", 0)),
            _rate(total, total_before, dt, "n"),
            _rate(fn, before, dt, "invocations", "error"),
            Text(str(errors), style="red" if errors else ""),
            str(inv.get("throttled", 0)),
            str(fn.get("async_queue_depth", 0)),
        )
    parts: list[Any] = [title, fns]
    sources = doc.get("sources", {})
    if sources:
        trig = Table(title="Triggers", title_justify="left", expand=True)
        for col in ("Trigger", "Kind", "Function", "State"):
            trig.add_column(col)
        for col in ("Records/s", "Lag", "Oldest age s", "DLQ'd"):
            trig.add_column(col, justify="right")
        prev_src = (previous or {}).get("sources", {})
        for name, src in sorted(sources.items()):
            state = Text("running", "green") if src.get("started") else Text("starting", "yellow")
            if src.get("error"):
                state = Text(str(src["error"])[:40], "red")
            dispatch = src.get("dispatch", {})
            lag = src.get("lag", {})
            trig.add_row(
                name,
                src.get("kind", ""),
                src.get("function", ""),
                state,
                _rate(src, prev_src.get(name), dt, "dispatch", "succeeded"),
                f"{lag.get('total', 0):g}" if lag else "-",
                f"{lag.get('oldest_age_s', 0):.1f}" if lag else "-",
                f"{dispatch.get('failed_to_destination', 0):g}" if dispatch else "-",
            )
        parts.append(trig)
    dlq = Table(title="Dead-letter queues", title_justify="left", expand=True)
    dlq.add_column("Queue")
    dlq.add_column("Depth", justify="right")
    for queue, depth in sorted(doc.get("dlq", {}).items()):
        dlq.add_row(queue, Text(str(depth), style="bold red" if depth else "dim"))
    parts.append(dlq)
    return Group(*parts)


def _fetch(url: str) -> dict[str, Any]:
    from eventrun.cli._client import get_json

    doc = get_json(url, "/status")
    if not isinstance(doc, dict):
        raise EventrunError(f"{url}/status did not answer a JSON object")
    return doc


@click.command()
@click.option("--url", help="The daemon (default: the config's server address).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and exit.")
@click.option("-c", "--config", default=None, help="Config file (default ./eventrun.yaml).")
@click.option(
    "-t",
    "--template",
    default=None,
    help="A SAM template run with -t: its daemon listens where -c says, else the default.",
)
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
def status(
    url: str | None, as_json: bool, config: str | None, template: str | None, interval: float
) -> None:
    """Live table of a running daemon: functions, workers, in-flight, rates, lag, errors,
    DLQ depth (Ctrl-C to quit; printed once when stdout is not a terminal)."""
    from eventrun.observe import quiet_logging

    quiet_logging()
    try:
        if config is None and template is not None:
            base = url or DEFAULT_URL  # a template alone: the server's defaults
        else:
            base = daemon_url(url, config or "eventrun.yaml")
        doc = _fetch(base)
    except EventrunError as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    if not Console().is_terminal:  # piped or redirected: one table, no redrawing
        Console().print(render(doc))
        return
    previous, at = doc, time.monotonic()
    try:
        with Live(render(doc), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                try:
                    doc = _fetch(base)
                except EventrunError as exc:
                    live.update(Text(f"{exc} (retrying)", style="red"))
                    continue
                now = time.monotonic()
                live.update(render(doc, previous, now - at))
                previous, at = doc, now
    except KeyboardInterrupt:
        pass
