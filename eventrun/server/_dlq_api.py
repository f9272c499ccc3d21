"""The daemon's DLQ endpoints (JSON), guarded like the rest of the API.

* ``GET /dlq`` -> ``{"queues": {"local:NAME": depth}}`` (non-empty ``local:`` queues);
* ``GET /dlq/{queue}?limit=&offset=`` -> ``{"queue", "depth", "entries": [...],
  "next_offset"}``: at most ``limit`` (<= 1000) entries and about 1 MiB of JSON, payloads
  over 64 KiB cut to a preview (``"truncated": true``); ``next_offset`` is null on the
  last page;
* ``GET /dlq/{queue}/{id}`` -> the entry (404 when absent);
* ``POST /dlq/{queue}/redrive`` ``{"to", "limit", "dry_run", "ids", "skip_success"}`` (all
  optional) ->
  ``{"queue", "dry_run", "redriven": [...], "skipped": [...]}``;
* ``DELETE /dlq/{queue}`` -> ``{"queue", "purged": n}``.

``{queue}`` is ``local:NAME`` or just ``NAME``. Redrives go through the functions' own async
invokers (:func:`eventrun.store._dlq.redrive` does the one-at-a-time put-then-ack).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventrun.common import one_line
from eventrun.exceptions import DlqError, QueueFull, StoreError
from eventrun.store import dlq as _dlq

if TYPE_CHECKING:
    from eventrun.server._api import _Auth
    from eventrun.server._view import ServedRuntime

__all__ = ["dlq_routes"]

Endpoint = Callable[[Request], Awaitable[Response]]


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": one_line(message)}, status_code=status)


# the stores take 64-bit integers (SQLite's INTEGER, Redis ranges, which add the limit)
MAX_PARAMETER = 2**53 - 1


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw)
    if not 0 <= value <= MAX_PARAMETER:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_PARAMETER}, got {raw[:40]}")
    return value


def _errors(endpoint: Endpoint) -> Endpoint:
    """Map a bad queue name or bad parameter to 400, a full queue (a redrive into a full
    ``async:FUNCTION``) to 429 and a store failure to 503."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except DlqError as exc:
            return _problem(400, str(exc))
        except ValueError as exc:
            return _problem(400, f"bad parameter: {exc}")
        except QueueFull as exc:
            return _problem(429, str(exc))
        except StoreError as exc:
            return _problem(503, f"store unavailable: {exc}")

    return wrapped


def _redrive_options(body: bytes) -> dict[str, Any]:
    """The keyword arguments of :func:`eventrun.store._dlq.redrive` from a request body; raises
    ValueError (-> 400) for anything malformed."""
    try:
        options = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(options, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(options) - {"to", "limit", "ids", "dry_run", "skip_success"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}")
    limit = options.get("limit")
    ids = options.get("ids")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ValueError("ids must be a list of entry ids")
    return {
        "to": options.get("to") or None,
        "limit": limit,
        "ids": ids,
        "dry_run": bool(options.get("dry_run", False)),
        "skip_success": bool(options.get("skip_success", False)),
    }


def dlq_routes(runtime: ServedRuntime, auth: _Auth) -> list[Route]:
    store = runtime.store

    async def enqueue(function: str, event: bytes, meta: dict[str, Any]) -> str:
        return await runtime.functions[function].async_invoker.enqueue(event, meta=meta)

    async def queues(request: Request) -> Response:
        return JSONResponse({"queues": await _dlq.list_queues(store)})

    async def entries(request: Request) -> Response:
        queue = _dlq.normalise_queue(request.path_params["queue"])
        limit = min(_int(request, "limit", 100), 1000)
        offset = _int(request, "offset", 0)
        found, next_offset = await _dlq.list_page(store, queue, limit=limit, offset=offset)
        depth = await store.depth(queue)
        doc = {"queue": queue, "depth": depth, "entries": found, "next_offset": next_offset}
        return JSONResponse(doc)

    async def entry(request: Request) -> Response:
        queue = _dlq.normalise_queue(request.path_params["queue"])
        found = await _dlq.get_entry(store, queue, request.path_params["id"])
        if found is None:
            return _problem(404, f"no entry {request.path_params['id']!r} in {queue}")
        return JSONResponse(found)

    async def redrive(request: Request) -> Response:
        options = _redrive_options(await request.body())
        report = await _dlq.redrive(
            store,
            request.path_params["queue"],
            functions=list(runtime.functions),
            enqueue=enqueue,
            **options,
        )
        return JSONResponse(report.as_dict())

    async def purge(request: Request) -> Response:
        queue = _dlq.normalise_queue(request.path_params["queue"])
        return JSONResponse({"queue": queue, "purged": await _dlq.purge(store, queue)})

    def route(path: str, endpoint: Endpoint, method: str) -> Route:
        return Route(path, auth.guard_admin(_errors(endpoint)), methods=[method])

    return [
        route("/dlq", queues, "GET"),
        route("/dlq/{queue}", entries, "GET"),
        route("/dlq/{queue}", purge, "DELETE"),
        route("/dlq/{queue}/{id}", entry, "GET"),
        route("/dlq/{queue}/redrive", redrive, "POST"),
    ]
