"""A direct ASGI path for the hot routes: the Invoke API and function URLs.

Why it exists: through Starlette, every request passes ServerErrorMiddleware,
ExceptionMiddleware, the Router (a regex per route until one matches) and
``request_response`` (a Request, an exception wrapper, two closures) before the endpoint
runs. On the daemon that layer cost about as much as the invocation itself, and code run
between network syscalls runs cold, so each microsecond saved in-process saves about two
on the server.

:class:`FastApp` is the same Starlette application; it answers a request itself only
when Starlette's router would pick (first full match, decided by Starlette's own
``Route.matches`` and memoised per method and path) a route registered with a
*responder* ``async (scope, receive) -> Response``, the very function that route's
Starlette endpoint calls. Same route, same response, and an unexpected error gets the
500 ``Internal Server Error`` that ServerErrorMiddleware sends before re-raising.
Everything else goes through Starlette unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

__all__ = ["FastApp", "Responder"]

Responder = Callable[[Scope, Receive], Awaitable[Response]]
_Hit = tuple[Responder, dict[str, Any]] | None
_CACHE_SIZE = 1024
_MISDIRECTED = PlainTextResponse(
    "Misdirected Request: this Host is not one this server answers (server.allowed_hosts)",
    421,
)


class FastApp(Starlette):
    """Starlette, with the routes in ``responders`` answered without its middleware."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        responders: Mapping[int, Responder],
        *,
        hosts: frozenset[bytes] | None = None,
    ) -> None:
        super().__init__(routes=routes)
        self._hosts = hosts  # accepted Host header values (eventrun.server._guards); None: any
        self._responders = dict(responders)  # id(route) -> responder
        self._hits: dict[tuple[str, str, str], _Hit] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._hosts is not None and scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"host":  # a set lookup on the raw value; lower case on a miss
                    if value not in self._hosts and value.lower() not in self._hosts:
                        await _MISDIRECTED(scope, receive, send)
                        return
                    break
        if scope["type"] == "http" and "path_params" not in scope:
            hit = self._route(scope)
            if hit is not None:
                respond, params = hit
                scope["path_params"] = dict(params)
                try:
                    response = await respond(scope, receive)
                except Exception:
                    await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
                    raise
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _route(self, scope: Scope) -> _Hit:
        key = (scope["method"], scope["path"], scope.get("root_path", ""))
        try:
            return self._hits[key]
        except KeyError:
            pass
        hit = self._resolve(scope)
        if len(self._hits) >= _CACHE_SIZE:  # arbitrary paths must not grow it forever
            self._hits.clear()
        self._hits[key] = hit
        return hit

    def _resolve(self, scope: Scope) -> _Hit:
        """Starlette's choice: the first route that fully matches (a partial match, a
        wrong method, only wins when nothing matches fully: left to Starlette)."""
        for route in self.router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                respond = self._responders.get(id(route))
                if respond is None:
                    return None
                return respond, dict(child.get("path_params", {}))
        return None
