"""``eventrun dlq list|show|redrive|purge``: inspect and redrive ``local:`` queues.

With ``--url`` the commands talk to a running daemon (``/dlq`` endpoints, bearer token from
``EVENTRUN_TOKEN``); without it they open the config's store directly (SQLite or Redis), so
they work with the daemon stopped, or running (a daemon picks redriven events up from
``async:FUNCTION`` on its next poll). Either way the logic is :mod:`eventrun.store._dlq`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from eventrun.common import one_line
from eventrun.exceptions import EventrunError

__all__ = ["dlq"]

CHUNK = 100
PAGE = 1000
"""Entries asked for per page by ``dlq list`` (the API's most)."""
Progress = Callable[[int], None]


class _Remote:
    """The daemon's ``/dlq`` API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        from eventrun.cli._client import client
        from eventrun.exceptions import DaemonError

        try:
            with client(self.url, timeout_s=300) as http:
                response = http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise DaemonError(f"cannot reach the daemon at {self.url}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise DaemonError(
                f"{self.url}{path} answered {response.status_code}: {response.text.strip()[:500]}"
            )
        return response.json()

    def queues(self) -> dict[str, int]:
        return dict(self._call("GET", "/dlq")["queues"])

    def entries(self, queue: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], Any]:
        doc = self._call("GET", f"/dlq/{queue}?limit={limit}&offset={offset}")
        return (list(doc["entries"]), doc.get("next_offset")) if doc else ([], None)

    def entry(self, queue: str, entry_id: str) -> dict[str, Any] | None:
        found = self._call("GET", f"/dlq/{queue}/{entry_id}")
        return dict(found) if found else None

    def redrive(self, queue: str, options: dict[str, Any], progress: Progress) -> dict[str, Any]:
        if options.get("dry_run"):
            return dict(self._call("POST", f"/dlq/{queue}/redrive", options))
        limit = options.get("limit")
        total: dict[str, Any] = {"queue": queue, "dry_run": False, "redriven": [], "skipped": []}
        while limit is None or len(total["redriven"]) < limit:
            chunk = CHUNK if limit is None else min(CHUNK, limit - len(total["redriven"]))
            part = self._call("POST", f"/dlq/{queue}/redrive", {**options, "limit": chunk})
            total["queue"] = part["queue"]
            total["redriven"] += part["redriven"]
            total["skipped"] = part["skipped"]  # the same leftovers are seen again each chunk
            progress(len(part["redriven"]))
            if len(part["redriven"]) < chunk:
                break
        return total

    def purge(self, queue: str) -> int:
        return int(self._call("DELETE", f"/dlq/{queue}")["purged"])


class _Direct:
    """The config's store, opened for each command."""

    def __init__(self, config: str) -> None:
        from eventrun.config import load_config

        self.loaded = load_config(config)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import anyio

        from eventrun.store import open_configured_store

        async def main() -> Any:
            store = open_configured_store(self.loaded.config.store, config_dir=self.loaded.dir)
            async with store:
                return await fn(store, *args, **kwargs)

        return anyio.run(main)

    def queues(self) -> dict[str, int]:
        from eventrun.store import dlq as _dlq

        return dict(self._run(_dlq.list_queues))

    def entries(self, queue: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], Any]:
        from eventrun.store import dlq as _dlq

        found, next_offset = self._run(_dlq.list_page, queue, limit=limit, offset=offset)
        return list(found), next_offset

    def entry(self, queue: str, entry_id: str) -> dict[str, Any] | None:
        from eventrun.store import dlq as _dlq

        found = self._run(_dlq.get_entry, queue, entry_id)
        return dict(found) if found else None

    def redrive(self, queue: str, options: dict[str, Any], progress: Progress) -> dict[str, Any]:
        from eventrun.store import dlq as _dlq

        async def go(store: Any) -> dict[str, Any]:
            report = await _dlq.redrive(
                store,
                queue,
                functions=list(self.loaded.config.functions),
                enqueue=_dlq.store_enqueue(store),
                progress=progress,
                **options,
            )
            return report.as_dict()

        return dict(self._run(go))

    def purge(self, queue: str) -> int:
        from eventrun.store import dlq as _dlq

        return int(self._run(_dlq.purge, queue))


def _backend(url: str | None, config: str) -> _Remote | _Direct:
    return _Remote(url) if url else _Direct(config)


def _all_entries(backend: _Remote | _Direct, queue: str, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` entries, following the pages (each bounded in entries and bytes)."""
    entries: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None and len(entries) < limit:
        page, offset = backend.entries(queue, min(PAGE, limit - len(entries)), offset)
        if not page:
            break
        entries += page
    return entries


def _fail(exc: EventrunError) -> NoReturn:
    click.echo(f"error: {one_line(str(exc))}", err=True)
    sys.exit(exc.exit_code)


def _queue(name: str) -> str:
    from eventrun.store import dlq as _dlq_ops

    return _dlq_ops.normalise_queue(name)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


url_option = click.option("--url", help="A running daemon (default: open the store directly).")
config_option = click.option(
    "-c", "--config", default="eventrun.yaml", show_default=True, help="Config file."
)


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge local: queues (DLQs and local destinations)."""
    from eventrun.observe import quiet_logging

    quiet_logging()  # stdout carries only the result


@dlq.command("list")
@click.argument("queue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=100, show_default=True, help="Entries to list.")
@url_option
@config_option
def list_(queue: str | None, as_json: bool, limit: int, url: str | None, config: str) -> None:
    """The non-empty local: queues, or the entries of QUEUE (oldest first)."""
    from rich.console import Console
    from rich.table import Table

    try:
        backend = _backend(url, config)
        if queue is None:
            queues = backend.queues()
            if as_json:
                click.echo(json.dumps({"queues": queues}, indent=2))
                return
            table = Table("Queue", "Depth")
            for name, depth in sorted(queues.items()):
                table.add_row(name, str(depth))
            Console().print(table if queues else "no entries in any local: queue")
            return
        name = _queue(queue)
        entries = _all_entries(backend, name, limit)
    except EventrunError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"queue": name, "entries": entries}, indent=2))
        return
    table = Table("Id", "Enqueued", "Function", "Condition", "Size", title=name)
    for e in entries:
        condition = e.get("condition") or e["kind"]
        size = f"{e['size_bytes']} B" + (
            " (truncated here; dlq show ID)" if e.get("truncated") else ""
        )
        table.add_row(e["id"], _when(e["enqueued_at"]), str(e["function"]), condition, size)
    Console().print(table)


@dlq.command()
@click.argument("entry_id", metavar="ID")
@click.option("--queue", help="The queue holding ID (default: search every local: queue).")
@url_option
@config_option
def show(entry_id: str, queue: str | None, url: str | None, config: str) -> None:
    """Print one entry as JSON (its payload decoded)."""
    try:
        backend = _backend(url, config)
        names = [_queue(queue)] if queue else sorted(backend.queues())
        for name in names:
            found = backend.entry(name, entry_id)
            if found is not None:
                click.echo(json.dumps(found, indent=2))
                return
    except EventrunError as exc:
        _fail(exc)
    where = names[0] if queue else "any local: queue"
    click.echo(f"error: no entry {entry_id!r} in {where}", err=True)
    sys.exit(1)


@dlq.command()
@click.argument("queue", required=False)
@click.option("--to", "to", help="Invoke this function (default: the one the entry came from).")
@click.option("--limit", type=click.IntRange(min=0), help="Redrive at most N entries.")
@click.option("--dry-run", is_flag=True, help="Show what would be redriven; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@url_option
@config_option
def redrive(
    queue: str | None,
    to: str | None,
    limit: int | None,
    dry_run: bool,
    as_json: bool,
    url: str | None,
    config: str,
) -> None:
    """Invoke the failed events of QUEUE again, asynchronously, each entry removed only
    after its event was queued. Without QUEUE: every local: queue (success records are
    left alone)."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    options: dict[str, Any] = {"to": to, "limit": limit, "dry_run": dry_run}
    reports: list[dict[str, Any]] = []
    try:
        backend = _backend(url, config)
        queues = backend.queues()
        names = [_queue(queue)] if queue else sorted(queues)
        if not queue:
            options["skip_success"] = True
        total = sum(queues.get(n, 0) for n in names)
        if limit is not None:
            total = min(total, limit)
        console = Console(stderr=True)
        with Bar(console=console, transient=True, disable=total < 50 or dry_run) as bar:
            task = bar.add_task("redriving", total=total)
            for name in names:
                left = None if limit is None else limit - sum(len(r["redriven"]) for r in reports)
                if left == 0:
                    break
                opts = {**options, "limit": left}
                reports.append(backend.redrive(name, opts, lambda n: bar.advance(task, n)))
    except EventrunError as exc:
        _fail(exc)
    if as_json:
        doc: Any = reports[0] if queue and reports else {"reports": reports}
        click.echo(json.dumps(doc, indent=2))
        return
    verb = "would redrive" if dry_run else "redrove"
    for r in reports:
        click.echo(f"{r['queue']}: {verb} {len(r['redriven'])}, skipped {len(r['skipped'])}")
        for s in r["skipped"]:
            click.echo(f"  skipped {s['id']}: {s['reason']}")


@dlq.command()
@click.argument("queue")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
@config_option
def purge(queue: str, yes: bool, url: str | None, config: str) -> None:
    """Delete every entry of QUEUE."""
    try:
        name = _queue(queue)
        if not yes:
            click.confirm(f"Delete every entry of {name}?", abort=True)
        count = _backend(url, config).purge(name)
    except EventrunError as exc:
        _fail(exc)
    click.echo(f"{name}: purged {count}")
