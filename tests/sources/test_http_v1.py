"""``http`` triggers with ``payload_format: "1.0"`` (the REST API proxy event and its
response mapping), greedy ``{name+}`` path parameters, and ``code:`` (a function's own
task root). Events are checked against aws-lambda-powertools' parser models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
)

from eventrun.config import parse_config
from eventrun.exceptions import ConfigError
from tests._runtime_kit import running_app, write_app

APP_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  rest:
    handler: fns.echo
    code: sub
    triggers:
      - http: {path: "/items/{id}", methods: [GET, POST], auth: none,
               payload_format: "1.0", stage: Prod}
      - http: {path: "/files/{path+}", methods: [GET], auth: none, payload_format: "1.0"}
  respond:
    handler: fns.respond
    code: sub
    triggers:
      - http: {path: /respond, methods: [POST], auth: none, payload_format: "1.0"}
  catchall:
    handler: fns.echo
    code: sub
    triggers:
      - http: {path: "/{proxy+}", methods: ["*"], auth: none}
"""

FNS = """
import json

import helper


def echo(event, context):
    return {"statusCode": 200, "body": json.dumps(helper.tag(event))}


def respond(event, context):
    result = json.loads(event["body"])
    if isinstance(result, dict) and result.get("raise"):
        raise RuntimeError("handler failure")
    return result
"""

HELPER = """
def tag(event):
    return {**event, "tagged": True}
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    files = {"sub/fns.py": FNS, "sub/helper.py": HELPER}
    config = write_app(tmp_path_factory.mktemp("http1"), APP_YAML, files)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(running_app(config)) as runtime,
    ):
        yield f"http://127.0.0.1:{runtime.bound_port}"


def get(url: str, path: str, **kwargs: Any) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.request(kwargs.pop("method", "GET"), path, **kwargs)
    assert r.status_code == 200, r.text
    event: dict[str, Any] = r.json()
    assert event.pop("tagged") is True  # code: sub is the task root: its sibling imports
    return event


def test_rest_event_shape(url: str) -> None:
    event = get(
        url,
        "/items/42?a=1&a=2&b=x",
        method="POST",
        headers={"x-multi": "one", "content-type": "application/json"},
        content=b'{"k": 1}',
    )
    APIGatewayProxyEventModel.model_validate(event)
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"a": "2", "b": "x"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x"]}
    assert event["multiValueHeaders"]["x-multi"] == ["one"]
    assert event["body"] == '{"k": 1}'
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["stage"] == "Prod"
    assert ctx["path"] == "/Prod/items/42"
    assert ctx["resourcePath"] == "/items/{id}"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"


def test_rest_event_without_query_or_body_has_nulls(url: str) -> None:
    event = get(url, "/items/7")
    APIGatewayProxyEventModel.model_validate(event)
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["body"] is None


def test_greedy_parameter_takes_the_rest_of_the_path(url: str) -> None:
    event = get(url, "/files/a/b/c.txt")
    assert event["pathParameters"] == {"path": "a/b/c.txt"}
    assert event["resource"] == "/files/{path+}"


def test_catch_all_is_tried_last(url: str) -> None:
    event = get(url, "/any/where?q=1")
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["pathParameters"] == {"proxy": "any/where"}
    assert event["rawPath"] == "/any/where"
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200  # the daemon's own routes still win
        assert http.get("/items/1").json()["resource"] == "/items/{id}"


@pytest.mark.parametrize(
    ("result", "status", "headers", "body"),
    [
        ({"statusCode": 201, "body": "made"}, 201, {"content-type": "application/json"}, b"made"),
        (
            {
                "statusCode": 200,
                "headers": {"x-one": "1"},
                "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
                "body": "aGk=",
                "isBase64Encoded": True,
            },
            200,
            {"x-one": "1", "set-cookie": "a=1, b=2"},
            b"hi",
        ),
        ({"hello": "world"}, 502, {}, b'{"message":"Internal server error"}'),
        ("text", 502, {}, b'{"message":"Internal server error"}'),
        ({"raise": True}, 502, {}, b'{"message":"Internal server error"}'),
    ],
)
def test_rest_response_mapping(
    url: str, result: object, status: int, headers: dict[str, str], body: bytes
) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(
            "/respond",
            content=json.dumps(result).encode(),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == status
    assert r.content == body
    for name, value in headers.items():
        assert r.headers[name] == value


def test_greedy_parameter_only_last() -> None:
    text = (
        'functions:\n  f:\n    handler: a.b\n    triggers:\n      - http: {path: "/a/{rest+}/b"}\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename="eventrun.yaml")
    assert str(info.value) == (
        "eventrun.yaml: functions.f.triggers[0].http.path: may have a greedy {name+} "
        "parameter only as its last segment, got '/a/{rest+}/b'"
    )
