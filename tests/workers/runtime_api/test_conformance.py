"""The Runtime API contract, case by case, against a live endpoint (the rows of
conformance.py, which docs/runtimes.md shows)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute

from eventrun.workers._rapi_endpoint import MAX_PAYLOAD, Endpoint, Invocation
from eventrun.workers._rapi_http import serve_connection

from .conformance import ROWS, Row, markdown

BASE = "/2018-06-01/runtime"
ROW = {row.key: row for row in ROWS}


@asynccontextmanager
async def served() -> AsyncIterator[tuple[Endpoint, httpx.AsyncClient, int]]:
    endpoint = Endpoint(lambda: None)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    route = partial(serve_connection, route=endpoint.route, body_limit=MAX_PAYLOAD)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, route, tg)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}{BASE}") as http:
            yield endpoint, http, port
        endpoint.abort()
        tg.cancel_scope.cancel()


def invocation(rid: str = "rid-1", payload: bytes = b'{"a": 1}') -> Invocation:
    return Invocation(rid, payload, 1_700_000_000_000, "arn:aws:lambda:r:0:function:f", "Root=1")


def check(row: Row, response: httpx.Response) -> None:
    assert response.status_code == row.status, response.text
    if row.body.endswith(", ...}"):
        assert response.json()["errorType"] == row.body.split('"')[3]
    elif row.body.startswith("{"):
        assert json.loads(response.content) == json.loads(row.body)


async def running(endpoint: Endpoint, http: httpx.AsyncClient, inv: Invocation) -> httpx.Response:
    """Take ``inv`` through /next: the endpoint is then running it."""
    endpoint.deliver(inv)
    return await http.get("/invocation/next")


async def test_next_blocks_then_delivers_with_headers() -> None:
    async with served() as (endpoint, http, _):
        got: list[httpx.Response] = []

        async def poll() -> None:
            got.append(await http.get("/invocation/next", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await endpoint.init_done.wait()  # the runtime is waiting in /next
            assert not got
            inv = invocation()
            inv.client_context, inv.identity = '{"custom":{}}', '{"cognitoIdentityId":"i"}'
            endpoint.deliver(inv)
    [response] = got
    check(ROW["next_delivers"], response)
    assert response.content == b'{"a": 1}'
    assert response.headers["lambda-runtime-aws-request-id"] == "rid-1"
    assert response.headers["lambda-runtime-deadline-ms"] == "1700000000000"
    assert response.headers["lambda-runtime-invoked-function-arn"].endswith(":function:f")
    assert response.headers["lambda-runtime-trace-id"] == "Root=1"
    assert response.headers["lambda-runtime-client-context"] == '{"custom":{}}'
    assert response.headers["lambda-runtime-cognito-identity"] == '{"cognitoIdentityId":"i"}'


async def test_next_while_running_is_forbidden() -> None:
    async with served() as (endpoint, http, _):
        await running(endpoint, http, invocation())
        check(ROW["next_while_running"], await http.get("/invocation/next"))
        assert endpoint.state == "running"


async def test_response_and_its_repeats() -> None:
    async with served() as (endpoint, http, _):
        check(ROW["response_before_next"], await http.post("/invocation/rid-1/response"))
        inv = invocation()
        await running(endpoint, http, inv)
        check(ROW["response_wrong_id"], await http.post("/invocation/other/response", content=b"1"))
        assert not inv.done.is_set()
        check(ROW["response_ok"], await http.post("/invocation/rid-1/response", content=b'"r"'))
        assert inv.done.is_set()
        assert (inv.ok, inv.body) == (True, b'"r"')
        check(ROW["response_twice"], await http.post("/invocation/rid-1/response", content=b"2"))
        check(ROW["response_twice"], await http.post("/invocation/rid-1/error", content=b"{}"))
        assert inv.body == b'"r"'


async def test_chunked_response_with_trailers() -> None:
    async with served() as (endpoint, http, port):
        inv = invocation()
        await running(endpoint, http, inv)
        async with await anyio.connect_tcp("127.0.0.1", port) as sock:
            await sock.send(
                f"POST {BASE}/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\n"
                "Transfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n"
                '\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n'
                "Lambda-Runtime-Function-Error-Type: none\r\n\r\n".encode()
            )
            reply = await sock.receive()
        status = int(reply.split(b" ", 2)[1])
        assert status == ROW["response_chunked"].status
        assert reply.endswith(b'{"status":"OK"}')
        assert inv.body == b'{"a": 1}'


async def _post_chunked(port: int, head: str, chunks: list[bytes], trailers: str) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as sock:
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        await sock.send(head.encode() + b"\r\n" + body + b"0\r\n" + trailers.encode() + b"\r\n")
        return await sock.receive()


async def test_streamed_response_with_http_prelude() -> None:
    async with served() as (endpoint, http, port):
        inv = invocation()
        await running(endpoint, http, inv)
        head = (
            f"POST {BASE}/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Content-Type: application/vnd.awslambda.http-integration-response\r\n"
        )
        prelude = b'{"statusCode": 201, "headers": {"a": "b"}}' + b"\x00" * 8
        reply = await _post_chunked(port, head, [prelude, b"hello ", b"world"], "")
        assert int(reply.split(b" ", 2)[1]) == ROW["response_streaming"].status
    assert inv.ok
    assert json.loads(inv.body) == {
        "statusCode": 201,
        "headers": {"a": "b"},
        "cookies": [],
        "body": base64.b64encode(b"hello world").decode(),
        "isBase64Encoded": True,
    }


async def test_streamed_response_error_trailers() -> None:
    async with served() as (endpoint, http, port):
        inv = invocation()
        await running(endpoint, http, inv)
        head = (
            f"POST {BASE}/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
        )
        error = base64.b64encode(b'{"errorType": "TypeError", "errorMessage": "x"}').decode()
        trailers = (
            "Lambda-Runtime-Function-Error-Type: TypeError\r\n"
            f"Lambda-Runtime-Function-Error-Body: {error}\r\n"
        )
        reply = await _post_chunked(port, head, [b"partial"], trailers)
        assert int(reply.split(b" ", 2)[1]) == ROW["response_streaming_error"].status
    assert (inv.ok, inv.error_type) == (False, "TypeError")
    assert json.loads(inv.body) == {"errorType": "TypeError", "errorMessage": "x"}


async def test_response_over_6_mb() -> None:
    async with served() as (endpoint, http, _):
        inv = invocation()
        await running(endpoint, http, inv)
        big = b"x" * (MAX_PAYLOAD + 1)
        check(ROW["response_too_large"], await http.post("/invocation/rid-1/response", content=big))
        assert (inv.ok, inv.error_type) == (False, "Function.ResponseSizeTooLarge")
        # the same keep-alive connection still works
        nxt = invocation("rid-2")
        response = await running(endpoint, http, nxt)
        assert response.headers["lambda-runtime-aws-request-id"] == "rid-2"


@pytest.mark.parametrize(
    ("key", "body", "headers", "error_type", "caller_gets"),
    [
        (
            "error_json",
            b'{"errorType": "KeyError", "errorMessage": "k", "stackTrace": []}',
            {"Lambda-Runtime-Function-Error-Type": "Unhandled"},
            "KeyError",
            {"errorType": "KeyError", "errorMessage": "k", "stackTrace": []},
        ),
        (
            "error_header_only",
            b"plain text",
            {"Lambda-Runtime-Function-Error-Type": "Runtime.Custom"},
            "Runtime.Custom",
            {"errorMessage": "plain text", "errorType": "Runtime.Custom"},
        ),
    ],
)
async def test_invocation_error(
    key: str, body: bytes, headers: dict[str, str], error_type: str, caller_gets: object
) -> None:
    async with served() as (endpoint, http, _):
        inv = invocation()
        await running(endpoint, http, inv)
        response = await http.post("/invocation/rid-1/error", content=body, headers=headers)
        check(ROW[key], response)
    assert (inv.ok, inv.error_type) == (False, error_type)
    assert json.loads(inv.body) == caller_gets


async def test_init_error() -> None:
    async with served() as (endpoint, http, _):
        body = b'{"errorType": "Runtime.ImportModuleError", "errorMessage": "no module"}'
        check(ROW["init_error"], await http.post("/init/error", content=body))
        assert endpoint.init_done.is_set()
        assert endpoint.init_error == ("Runtime.ImportModuleError", body)
        check(ROW["next_after_init_error"], await http.get("/invocation/next"))


async def test_init_error_after_init_is_forbidden() -> None:
    async with served() as (endpoint, http, _):
        await running(endpoint, http, invocation())
        check(ROW["init_error_late"], await http.post("/init/error", content=b"{}"))
        assert endpoint.init_error is None


async def test_unknown_path() -> None:
    async with served() as (_, http, _port):
        response = await http.post("/invocation/rid-1/other")
        assert response.status_code == ROW["unknown_path"].status
        assert response.text.strip() == ROW["unknown_path"].body


def test_every_row_is_checked_and_the_doc_shows_the_table() -> None:
    source = Path(__file__).read_text()
    for row in ROWS:
        assert f'"{row.key}"' in source, row.key
    doc = Path(__file__).parents[3] / "docs" / "runtimes.md"
    assert markdown() in doc.read_text(), (
        "docs/runtimes.md: regenerate the table with "
        "python -m tests.workers.runtime_api.conformance"
    )
