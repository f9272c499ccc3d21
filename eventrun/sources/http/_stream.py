"""``invoke_mode: RESPONSE_STREAM``: a function URL answering as the function writes.

The function's stream arrives in Lambda's HTTP-integration form (a JSON prelude, 8 NUL
bytes, then the body; see :meth:`eventrun.abc.SourceContext.invoke`). The status,
headers and cookies of the prelude start the response; each body chunk is sent on as it
arrives. As a function URL does:

* a function that answers whole (no stream) gets its buffered mapping;
* an error before the prelude (or a saturated function) is the usual 502 (or 429);
* an error after the response started (the function's error trailers, a timeout, over
  20 MB) ends it early: the connection is closed without the body's last chunk, so the
  client sees a truncated response rather than a complete one.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from typing import Any

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from eventrun.abc import InvokeOutcome, SourceContext
from eventrun.exceptions import FunctionSaturated

__all__ = ["StreamedResponse"]

_DELIMITER = b"\x00" * 8
_MAX_PRELUDE = 64 * 1024


def _start(prelude: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    try:
        doc = json.loads(prelude)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    headers = [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, v in (doc.get("headers") or {}).items()
    ]
    if not any(name == b"content-type" for name, _ in headers):
        headers.append((b"content-type", b"application/octet-stream"))
    headers += [(b"set-cookie", str(c).encode("latin-1")) for c in doc.get("cookies") or []]
    return int(doc.get("statusCode") or 200), headers


class StreamedResponse(Response):
    """Runs the invocation while answering: the invocation in one task, the relay of
    its chunks to the client in the other (one task group, bounded by the request)."""

    def __init__(
        self,
        ctx: SourceContext,
        event: Any,
        buffered: Callable[[InvokeOutcome], Response],
        finish: Callable[[list[tuple[bytes, bytes]]], None],
    ) -> None:
        super().__init__()  # (its status and headers are the prelude's, sent in __call__)
        self.ctx, self.event, self.buffered, self.finish = ctx, event, buffered, finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks = anyio.create_memory_object_stream[bytes](math.inf)
        result: list[InvokeOutcome | None] = []

        def relay(chunk: bytes) -> None:
            # the client gone, the invocation is being cancelled: the rest is dropped
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                chunks_in.send_nowait(chunk)

        async def run() -> None:
            with chunks_in:
                try:
                    result.append(await self.ctx.invoke(self.event, stream=relay))
                except FunctionSaturated:
                    result.append(None)

        async with anyio.create_task_group() as tg, chunks:
            tg.start_soon(run)
            head = b""
            async for chunk in chunks:
                head += chunk
                if _DELIMITER in head or len(head) > _MAX_PRELUDE:
                    break
            else:  # the invocation ended before a prelude: answered whole, or failed
                await self._whole(result[0] if result else None, head, scope, receive, send)
                return
            prelude, _, rest = head.partition(_DELIMITER)
            status, headers = _start(prelude)
            self.finish(headers)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if rest:
                await send({"type": "http.response.body", "body": rest, "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        outcome = result[0] if result else None
        if outcome is not None and outcome.ok:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # else: returned without the last chunk; the server closes the connection

    async def _whole(
        self, outcome: InvokeOutcome | None, head: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response: Response
        if outcome is None:
            response = JSONResponse({"Message": "Too Many Requests"}, status_code=429)
        elif not outcome.ok or head:
            response = JSONResponse({"Message": "Internal Server Error"}, status_code=502)
        else:
            response = self.buffered(outcome)
        await response(scope, receive, send)
