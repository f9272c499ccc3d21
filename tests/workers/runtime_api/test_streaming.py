"""Function URLs with ``invoke_mode: RESPONSE_STREAM``: a Node function's body reaches
the client as it is written (real Node, aws-lambda-ric; see test_daemon.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from eventrun.runtime import Runtime
from eventrun.workers._rapi_endpoint import MAX_STREAM
from tests._runtime_kit import running_app, write_app
from tests.fixtures.node_ric import node_function

from .conftest import APPS

pytestmark = pytest.mark.timeout(600)  # the first test may install aws-lambda-ric
MIB = 1024 * 1024


@asynccontextmanager
async def _app(tmp_path: Path, gate: Path) -> AsyncIterator[Runtime]:
    node = node_function(APPS / "node_fn", tmp_path)
    fns = "\n".join(
        f"""
          {name}:
            runtime: nodejs20.x
            handler: index.{handler}
            code: {node.name}
            timeout: 20s
            environment: {{GATE: "{gate}"}}
            triggers: [{{http: {{path: /{name}, methods: [GET, POST], auth: none{mode}}}}}]"""
        for name, handler, mode in (
            ("live", "live", ", invoke_mode: RESPONSE_STREAM"),
            ("fail", "streamfail", ", invoke_mode: RESPONSE_STREAM"),
            ("whole", "http", ", invoke_mode: RESPONSE_STREAM"),
            ("huge", "huge", ", invoke_mode: RESPONSE_STREAM"),
            ("buffered", "stream", ""),
        )
    )
    config = write_app(tmp_path, f"functions:{fns}\n")
    async with running_app(config) as runtime:
        yield runtime


def _open_gate(gate: Path) -> None:
    with open(gate, "w") as fifo:  # blocks until the handler opened it for reading
        fifo.write("go")


async def test_the_first_chunk_arrives_before_the_handler_finishes(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    async with (
        _app(tmp_path, gate) as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30) as http,
        http.stream("GET", "/live") as response,
    ):
        assert response.status_code == 207
        assert response.headers["x-live"] == "yes"
        assert response.headers["content-type"] == "text/plain"
        assert response.headers["set-cookie"] == "a=1"
        chunks = response.aiter_raw()
        with anyio.fail_after(20):
            first = await anext(chunks)
        # the handler is still blocked on the gate, which only this test opens
        assert first == b"one;"
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(_open_gate, gate)
            rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"two:go"


async def test_an_error_mid_stream_ends_the_response_early(tmp_path: Path) -> None:
    async with (
        _app(tmp_path, tmp_path / "unused") as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30) as http,
        http.stream("GET", "/fail") as response,
    ):
        assert response.status_code == 200  # started before the error, as Lambda's
        received: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):  # no last chunk: truncated
            await _read_into(response, received)
    assert b"".join(received) == b"partial"


async def test_a_stream_ends_at_lambdas_20_mib_limit(tmp_path: Path) -> None:
    async with (
        _app(tmp_path, tmp_path / "unused") as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30) as http,
        http.stream("GET", "/huge") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        received: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await _read_into(response, received)
    size = sum(map(len, received))
    assert 19 * MIB < size <= MAX_STREAM == 20 * MIB  # the 21st MiB never arrives


async def _read_into(response: httpx.Response, into: list[bytes]) -> None:
    async for chunk in response.aiter_raw():
        into.append(chunk)


async def test_buffered_functions_and_triggers_answer_whole(tmp_path: Path) -> None:
    async with (
        _app(tmp_path, tmp_path / "unused") as runtime,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30) as http,
    ):
        whole = await http.post("/whole", content=b"{}")
        buffered = await http.get("/buffered")
    # a handler that returns (no streamifyResponse) behind a RESPONSE_STREAM URL
    assert whole.status_code == 201
    assert whole.headers["x-runtime"] == "node"
    assert whole.json() == {"path": "/whole", "method": "POST"}
    assert "x-amzn-requestid" in whole.headers
    # a streaming handler behind a BUFFERED URL: read whole, as before
    assert buffered.status_code == 202
    assert buffered.headers["x-streamed"] == "yes"
    assert buffered.text == "hello world"
    assert buffered.headers["content-length"] == "11"
