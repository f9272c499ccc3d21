"""ASGI helpers for the hot routes."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from eventrun.asgi import JSONBytesResponse


@pytest.mark.parametrize(
    "body", [b"null", b'{"ok":true}', b'"h\xc3\xa9"', b"[" + b"1," * 5000 + b"1]"]
)
def test_json_bytes_response_is_starlettes_json_response(body: bytes) -> None:
    ours = JSONBytesResponse(body)
    theirs = Response(body, status_code=200, media_type="application/json")
    assert (ours.status_code, ours.body, ours.raw_headers, ours.background) == (
        theirs.status_code,
        theirs.body,
        theirs.raw_headers,
        theirs.background,
    )
    assert ours.raw_headers[0] == (b"content-length", str(len(body)).encode())


async def test_json_bytes_response_is_sent_with_added_headers() -> None:
    response = JSONBytesResponse(b'{"a":1}')
    response.headers["x-amzn-RequestId"] = "r-1"
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await response({"type": "http", "method": "GET"}, receive, send)
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", b"7"),
                (b"content-type", b"application/json"),
                (b"x-amzn-requestid", b"r-1"),
            ],
        },
        {"type": "http.response.body", "body": b'{"a":1}'},
    ]
