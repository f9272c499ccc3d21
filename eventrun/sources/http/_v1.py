"""Payload format 1.0: the API Gateway REST API proxy event, and its response mapping.

Used by ``http`` triggers with ``payload_format: "1.0"`` (SAM ``Api`` events, and
``HttpApi`` events that ask for 1.0). The event carries both ``headers`` (last value of a
repeated header wins, as API Gateway does) and ``multiValueHeaders``, the same for the
query string; ``resource`` is the route's path template and ``requestContext.path`` the
path with the stage in front, as API Gateway sends it. The response must be a proxy
response (``statusCode``...): anything else is a 502 ``{"message": "Internal server
error"}``, as REST APIs answer.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from eventrun.asgi import new_request_id

__all__ = ["bad_gateway_v1", "event_v1", "map_response_v1"]


def _multi(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def event_v1(
    scope: Scope,
    body: bytes,
    *,
    resource: str,
    stage: str,
    is_text: bool,
    token_auth: bool = False,
) -> dict[str, Any]:
    """The REST API proxy event (payload format 1.0) for one request."""
    pairs = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in scope["headers"]
        if not (token_auth and k.lower() == b"authorization")
    ]
    headers, multi_headers = _multi(pairs)
    lower = {k.lower(): v for k, v in headers.items()}
    raw_query = scope.get("query_string", b"").decode("latin-1")
    query, multi_query = _multi(parse_qsl(raw_query, keep_blank_values=True))
    path = scope["path"]
    method = scope["method"]
    now = time.time()
    client = scope.get("client")
    host = lower.get("host", "localhost")
    stage_path = path if stage == "$default" else f"/{stage}{path}"
    params = scope.get("path_params") or {}
    event: dict[str, Any] = {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {k: str(v) for k, v in params.items()} or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "eventrun",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": new_request_id(),
            "requestTime": datetime.fromtimestamp(int(now), UTC).strftime(
                "%d/%b/%Y:%H:%M:%S +0000"
            ),
            "path": stage_path,
            "accountId": "123456789012",
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            "stage": stage,
            "domainPrefix": host.split(".", 1)[0],
            "requestTimeEpoch": int(now * 1000),
            "requestId": new_request_id(),
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": client[0] if client else "127.0.0.1",
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": lower.get("user-agent", ""),
                "user": None,
            },
            "domainName": host,
            "apiId": "eventrun",
        },
        "body": None,
        "isBase64Encoded": False,
    }
    if body:
        if is_text:
            try:
                event["body"] = body.decode()
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


def bad_gateway_v1() -> Response:
    """What a REST API answers for a handler error or a response it cannot map."""
    return JSONResponse({"message": "Internal server error"}, status_code=502)


def map_response_v1(payload: bytes) -> Response:
    """A REST API proxy response (``statusCode``, ``headers``, ``multiValueHeaders``,
    ``body``, ``isBase64Encoded``) to an HTTP response; anything else is a 502."""
    try:
        value = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return bad_gateway_v1()
    if not isinstance(value, dict) or not isinstance(value.get("statusCode"), int | str):
        return bad_gateway_v1()
    try:
        status = int(value["statusCode"])
    except ValueError:
        return bad_gateway_v1()
    body = value.get("body")
    if body is None:
        content = b""
    elif value.get("isBase64Encoded"):
        content = base64.b64decode(body)
    elif isinstance(body, str):
        content = body.encode()
    else:
        content = json.dumps(body).encode()
    response = Response(content, status_code=status)
    raw = response.raw_headers
    for name, values in (value.get("multiValueHeaders") or {}).items():
        for item in values if isinstance(values, list) else [values]:
            raw.append((str(name).lower().encode("latin-1"), str(item).encode("latin-1")))
    for name, item in (value.get("headers") or {}).items():
        key = str(name).lower().encode("latin-1")
        raw[:] = [(k, v) for k, v in raw if k != key]
        raw.append((key, str(item).encode("latin-1")))
    if not any(k == b"content-type" for k, _ in raw):
        raw.append((b"content-type", b"application/json"))
    return response
