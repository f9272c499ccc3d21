"""The daemon's HTTP server against a real runtime: the Lambda Invoke API (status codes,
headers, errors, limits) with httpx and with boto3's lambda client, health, readiness,
Prometheus metrics, the status API, the OpenAPI document and bearer-token auth.

One runtime serves the module's tests (it runs on its own event loop in a blocking portal);
auth tests start their own runtime because the tokens are read from the environment.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import pytest
import structlog.testing
from anyio.abc import SocketStream
from anyio.from_thread import start_blocking_portal
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families
from watchfiles import awatch

from eventrun.config import load_config
from eventrun.exceptions import ConfigError
from eventrun.runtime._runtime import Runtime
from tests._runtime_kit import running_app, write_app

INVOKE = "/2015-03-31/functions/{}/invocations"

APP_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
  boom:
    handler: fns:boom
  gate:
    handler: fns:gate
    concurrency: 1
  sidefx:
    handler: fns:sidefx
    maximum_retry_attempts: 0
  counted:
    handler: fns:counted
  dry:
    handler: fns:echo
  ctx:
    handler: fns:ctx
  web:
    handler: fns:echo
    triggers:
      - http: {path: /web, methods: [GET], auth: none}
"""

FNS = """
import json
import socket
from pathlib import Path


def echo(event, context):
    print("echo says hi to", context.aws_request_id)
    if isinstance(event, dict) and event.get("pad"):
        print(event["pad"])
    return event


def boom(event, context):
    raise ValueError("boom: " + str(event.get("why")))


def gate(event, context):
    # a rendezvous with the test: "in" once running, then block until the test answers
    with socket.create_connection(("127.0.0.1", event["port"])) as s:
        s.sendall(b"in")
        s.recv(1)
    return "released"


def sidefx(event, context):
    Path(event["path"]).write_text(json.dumps({"value": event["value"],
                                               "request_id": context.aws_request_id}))
    return None


def ctx(event, context):
    cc = context.client_context
    return None if cc is None else {"custom": cc.custom, "env": cc.env}


def counted(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"n": event.get("n")}
"""


@dataclass
class App:
    runtime: Runtime
    url: str
    root: Path

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("api")
    config = write_app(root, APP_YAML, {"fns.py": FNS})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EVENTRUN_TOKENS", raising=False)
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(running_app(config)) as runtime,
        ):
            yield App(runtime, f"http://127.0.0.1:{runtime.bound_port}", root)


def lambda_client(url: str, **kwargs: Any) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=BotoConfig(retries={"total_max_attempts": 1}, **kwargs),
    )


class Gate:
    """A loopback TCP rendezvous with the ``gate`` handler (no sleeps, no polling)."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener.listeners[0]
        self.port: int = self._listener.extra(anyio.abc.SocketAttribute.local_port)

    async def arrival(self) -> SocketStream:
        """Wait until a handler is inside ``gate``; send a byte on the stream to release it."""
        with anyio.fail_after(30):
            stream: SocketStream = await self._listener.accept()
            assert await stream.receive(2) == b"in"
        return stream


@asynccontextmanager
async def gate() -> AsyncIterator[Gate]:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        yield Gate(listener)


async def wait_for_file(path: Path, timeout_s: float = 30) -> str:
    """The file's text once it exists (watchfiles events; re-checks every 0.5 s)."""
    with anyio.fail_after(timeout_s):
        async for _ in awatch(path.parent, rust_timeout=500, yield_on_timeout=True):
            if path.exists() and path.read_text():
                return path.read_text()
    raise AssertionError("unreachable")


def function_stats(app: App, name: str) -> dict[str, Any]:
    return dict(app.runtime.functions[name].runner.statistics())


# -- the Invoke API over httpx --------------------------------------------------------


async def test_request_response_returns_the_payload_and_executed_version(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"), json={"a": [1, 2], "s": "x"})
    assert r.status_code == 200
    assert r.json() == {"a": [1, 2], "s": "x"}
    assert r.headers["X-Amz-Executed-Version"] == "$LATEST"
    assert r.headers["content-type"] == "application/json"
    assert "X-Amz-Function-Error" not in r.headers
    assert "X-Amz-Log-Result" not in r.headers


async def test_empty_body_invokes_with_an_empty_object(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"))
    assert (r.status_code, r.json()) == (200, {})


async def test_name_qualifier_and_arn_resolve_to_the_function(app: App) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    async with app.client() as http:
        for name in ("echo:$LATEST", arn):
            r = await http.post(INVOKE.format(name), json={"via": name})
            assert (r.status_code, r.json()) == (200, {"via": name})


async def test_client_context_reaches_the_handler(app: App) -> None:
    data = {"custom": {"tenant": "t1"}, "env": {"locale": "en"}}
    header = base64.b64encode(json.dumps(data).encode()).decode()
    async with app.client() as http:
        r = await http.post(INVOKE.format("ctx"), json={}, headers={"X-Amz-Client-Context": header})
        plain = await http.post(INVOKE.format("ctx"), json={})
    assert r.json() == data
    assert plain.json() is None

    def call() -> Any:
        r = lambda_client(app.url).invoke(FunctionName="ctx", ClientContext=header, Payload=b"{}")
        return json.loads(r["Payload"].read())

    assert await anyio.to_thread.run_sync(call) == data


async def test_handler_error_is_200_with_function_error_and_lambda_error_json(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("boom"), json={"why": "because"})
    assert r.status_code == 200
    assert r.headers["X-Amz-Function-Error"] == "Unhandled"
    body = r.json()
    assert set(body) == {"errorMessage", "errorType", "stackTrace", "requestId"}
    assert body["errorMessage"] == "boom: because"
    assert body["errorType"] == "ValueError"
    assert body["requestId"] == r.headers["x-amzn-RequestId"]
    assert any("fns.py" in frame and "in boom" in frame for frame in body["stackTrace"])


async def test_event_is_202_and_runs_later(app: App) -> None:
    target = app.root / "out" / "event.json"
    target.parent.mkdir(exist_ok=True)
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("sidefx"),
            json={"path": str(target), "value": 42},
            headers={"X-Amz-Invocation-Type": "Event"},
        )
    assert r.status_code == 202
    assert r.content == b""
    request_id = r.headers["x-amzn-RequestId"]
    written = json.loads(await wait_for_file(target))
    assert written == {"value": 42, "request_id": request_id}


async def test_event_with_an_empty_body_is_accepted(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"), headers={"X-Amz-Invocation-Type": "Event"})
    assert r.status_code == 202


async def test_dry_run_is_204_and_invokes_nothing(app: App) -> None:
    before = function_stats(app, "dry")["invocations"]
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("dry"), json={}, headers={"X-Amz-Invocation-Type": "DryRun"}
        )
        missing = await http.post(
            INVOKE.format("nope"), json={}, headers={"X-Amz-Invocation-Type": "DryRun"}
        )
    assert (r.status_code, r.content) == (204, b"")
    assert missing.status_code == 404
    assert function_stats(app, "dry")["invocations"] == before


async def test_tail_returns_the_last_4kb_of_the_log_base64(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"), json={}, headers={"X-Amz-Log-Type": "Tail"})
    assert r.status_code == 200
    request_id = r.headers["x-amzn-RequestId"]
    log = base64.b64decode(r.headers["X-Amz-Log-Result"]).decode()
    assert f"echo says hi to {request_id}" in log
    assert f"START RequestId: {request_id}" in log
    assert f"REPORT RequestId: {request_id}" in log


async def test_tail_is_cut_to_4kb(app: App) -> None:
    payload = {"pad": "x" * 10_000}  # printed by the handler: a 10 KB log
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"), json=payload, headers={"X-Amz-Log-Type": "Tail"})
    raw = base64.b64decode(r.headers["X-Amz-Log-Result"])
    assert len(raw) <= 4096
    assert raw.decode().rstrip().splitlines()[-1].startswith("REPORT RequestId:")


async def test_unknown_function_is_404_resource_not_found(app: App) -> None:
    async with app.client() as http:
        r = await http.post(INVOKE.format("nope"), json={})
    assert r.status_code == 404
    assert r.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert "function:nope" in r.json()["Message"]
    assert r.json()["Type"] == "User"


async def test_error_message_quoting_user_text_is_one_line(app: App) -> None:
    """A function name holding line separators (percent-encoded in the path) comes back
    escaped: the error message is one line, in the body and in anything that logs it."""
    async with app.client() as http:
        r = await http.post(INVOKE.format("no%E2%80%A8pe%C2%85x%0Ay"), json={})
    assert r.status_code == 404
    message = r.json()["Message"]
    assert message.splitlines() == [message]
    assert message.endswith("function:no\\u2028pe\\u0085x\\ny")


async def test_saturated_function_is_429_while_a_slot_is_held(app: App) -> None:
    first: dict[str, httpx.Response] = {}
    async with gate() as g, app.client() as http, anyio.create_task_group() as tg:

        async def hold() -> None:
            first["r"] = await http.post(INVOKE.format("gate"), json={"port": g.port})

        tg.start_soon(hold)
        inside = await g.arrival()
        try:
            r = await http.post(INVOKE.format("gate"), json={"port": g.port})
            assert r.status_code == 429
            assert r.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
            assert r.headers["Retry-After"] == "1"
            assert r.json()["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
            with pytest.raises(ClientError) as caught:
                await anyio.to_thread.run_sync(
                    lambda: lambda_client(app.url).invoke(
                        FunctionName="gate", Payload=json.dumps({"port": g.port})
                    )
                )
            error = caught.value.response
            assert error["Error"]["Code"] == "TooManyRequestsException"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        finally:
            await inside.send(b"x")
            await inside.aclose()
    assert first["r"].status_code == 200
    assert first["r"].json() == "released"


async def test_payload_limits_are_413(app: App) -> None:
    sync_over = json.dumps("a" * (6 * 1024 * 1024)).encode()  # 6 MiB + 2 bytes
    async_over = json.dumps("a" * (1024 * 1024)).encode()
    async_at = b'{"s":"' + b"a" * (1024 * 1024 - 8) + b'"}'  # exactly 1 MiB
    async with app.client() as http:
        r = await http.post(INVOKE.format("echo"), content=sync_over)
        assert r.status_code == 413
        assert r.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
        r = await http.post(
            INVOKE.format("echo"), content=async_over, headers={"X-Amz-Invocation-Type": "Event"}
        )
        assert r.status_code == 413
        assert r.headers["x-amzn-ErrorType"] == "RequestTooLargeException"
        r = await http.post(
            INVOKE.format("echo"), content=async_at, headers={"X-Amz-Invocation-Type": "Event"}
        )
        assert r.status_code == 202


@pytest.mark.parametrize("kind", ["RequestResponse", "Event"])
async def test_malformed_json_is_400(app: App, kind: str) -> None:
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("echo"), content=b"{not json", headers={"X-Amz-Invocation-Type": kind}
        )
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"


@pytest.mark.parametrize("kind", ["RequestResponse", "Event"])
@pytest.mark.parametrize(
    "body", [b"[" * 200_000, b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000]
)
async def test_deeply_nested_json_is_400_not_500(app: App, kind: str, body: bytes) -> None:
    """Deeper than the parsers' recursion limit: RecursionError used to escape as a 500
    with a traceback in the log."""
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("echo"), content=body, headers={"X-Amz-Invocation-Type": kind}
        )
    assert r.status_code == 400, r.text[:200]
    assert r.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert r.json()["Type"] == "User"


async def test_a_deeply_nested_client_context_is_ignored(app: App) -> None:
    context = base64.b64encode(b"[" * 20_000).decode()
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("echo"), json={"k": 1}, headers={"X-Amz-Client-Context": context}
        )
    assert (r.status_code, r.json()) == (200, {"k": 1})


@pytest.mark.parametrize("param", ["offset", "limit"])
@pytest.mark.parametrize("value", [str(2**64), "9" * 4000, "-1", "x"])
async def test_dlq_listing_parameters_out_of_range_are_400(
    app: App, param: str, value: str
) -> None:
    async with app.client() as http:
        r = await http.get("/dlq/local:nothing", params={param: value})
        assert r.status_code == 400, r.text[:200]
        assert r.json()["message"].startswith("bad parameter")
        r = await http.get("/dlq/local:nothing", params={param: str(2**53 - 1)})
        assert r.status_code == 200


async def test_a_deeply_nested_redrive_body_is_400(app: App) -> None:
    async with app.client() as http:
        r = await http.post(
            "/dlq/local:nothing/redrive",
            content=b"[" * 200_000,
            headers={"X-Eventrun-Request": "1"},
        )
    assert r.status_code == 400, r.text[:200]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "the body must be a JSON object"),
        (b'{"to": "echo", "force": true}', "unknown option(s) ['force']"),
        (b'{"ids": "abc"}', "ids must be a list of entry ids"),
        (b'{"ids": ["a", 1]}', "ids must be a list of entry ids"),
    ],
)
async def test_a_malformed_redrive_body_is_400_and_names_the_problem(
    app: App, body: bytes, message: str
) -> None:
    async with app.client() as http:
        r = await http.post(
            "/dlq/local:nothing/redrive", content=body, headers={"X-Eventrun-Request": "1"}
        )
    assert r.status_code == 400, r.text[:200]
    assert r.json()["message"] == f"bad parameter: {message}"


async def test_unknown_invocation_type_is_400(app: App) -> None:
    async with app.client() as http:
        r = await http.post(
            INVOKE.format("echo"), json={}, headers={"X-Amz-Invocation-Type": "Sometimes"}
        )
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"


async def test_get_on_the_invoke_api_is_405(app: App) -> None:
    async with app.client() as http:
        r = await http.get(INVOKE.format("echo"))
    assert r.status_code == 405


# -- boto3 ----------------------------------------------------------------------------


async def test_boto3_invoke_request_response_event_dry_run_and_tail(app: App) -> None:
    target = app.root / "out" / "boto3-event.json"
    target.parent.mkdir(exist_ok=True)

    def calls() -> dict[str, Any]:
        client = lambda_client(app.url)
        out: dict[str, Any] = {}
        r = client.invoke(FunctionName="echo", Payload=json.dumps({"k": "v"}), LogType="Tail")
        out["sync"] = {**r, "Payload": json.loads(r["Payload"].read())}
        r = client.invoke(
            FunctionName="sidefx",
            InvocationType="Event",
            Payload=json.dumps({"path": str(target), "value": "boto3"}),
        )
        out["event"] = r
        out["dry"] = client.invoke(FunctionName="echo", InvocationType="DryRun")
        r = client.invoke(FunctionName="boom", Payload=b'{"why": "boto3"}')
        out["error"] = {**r, "Payload": json.loads(r["Payload"].read())}
        return out

    out = await anyio.to_thread.run_sync(calls)
    sync = out["sync"]
    assert sync["StatusCode"] == 200
    assert sync["Payload"] == {"k": "v"}
    assert sync["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in sync
    log = base64.b64decode(sync["LogResult"]).decode()
    assert "echo says hi to" in log
    assert out["event"]["StatusCode"] == 202
    assert out["dry"]["StatusCode"] == 204
    error = out["error"]
    assert error["StatusCode"] == 200
    assert error["FunctionError"] == "Unhandled"
    assert error["Payload"]["errorMessage"] == "boom: boto3"
    assert json.loads(await wait_for_file(target))["value"] == "boto3"


async def test_boto3_parses_resource_not_found(app: App) -> None:
    def call() -> Any:
        return lambda_client(app.url).invoke(FunctionName="nope", Payload=b"{}")

    with pytest.raises(ClientError) as caught:
        await anyio.to_thread.run_sync(call)
    error = caught.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert "function:nope" in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert type(caught.value).__name__ == "ResourceNotFoundException"


async def test_boto3_parses_request_too_large(app: App) -> None:
    def call() -> Any:
        return lambda_client(app.url).invoke(
            FunctionName="echo", InvocationType="Event", Payload=json.dumps("a" * 1024 * 1024)
        )

    with pytest.raises(ClientError) as caught:
        await anyio.to_thread.run_sync(call)
    assert type(caught.value).__name__ == "RequestTooLargeException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


# -- health, readiness, metrics, status, OpenAPI -----------------------------------------


async def test_health_and_readiness(app: App) -> None:
    async with app.client() as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "waiting_for": []})


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (other labels, such
    as the trigger, are summed over)."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert found, f"no sample {name}{labels}"
    return sum(found)


async def test_metrics_count_what_was_invoked(app: App) -> None:
    async with app.client() as http:
        for n in range(3):
            assert (await http.post(INVOKE.format("counted"), json={"n": n})).status_code == 200
        for _ in range(2):
            r = await http.post(INVOKE.format("counted"), json={"fail": True})
            assert r.headers["X-Amz-Function-Error"] == "Unhandled"
        r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    fn = {"function": "counted"}
    assert metric(text, "eventrun_invocations_total", **fn, outcome="ok") == 3
    assert metric(text, "eventrun_invocations_total", **fn, outcome="error") == 2
    assert metric(text, "eventrun_invocation_duration_seconds_count", **fn) == 5
    assert metric(text, "eventrun_cold_starts_total", **fn) >= 1
    assert metric(text, "eventrun_concurrency_saturation", **fn) == 0
    assert metric(text, "eventrun_inflight_invocations", **fn) == 0
    assert metric(text, "eventrun_async_queue_depth", **fn) == 0


async def test_status_reports_functions_workers_and_errors(app: App) -> None:
    async with app.client() as http:
        await http.post(INVOKE.format("boom"), json={"why": "status"})
        r = await http.get("/status")
    assert r.status_code == 200
    doc = r.json()
    assert doc["ready"] is True
    assert doc["uptime_s"] > 0
    assert set(doc["functions"]) == {
        "echo",
        "boom",
        "gate",
        "sidefx",
        "counted",
        "dry",
        "ctx",
        "web",
    }
    boom = doc["functions"]["boom"]
    assert boom["runtime"] == "process"
    assert boom["concurrency"] == 4
    assert boom["workers"]["invocations"] >= 1
    assert boom["workers"]["errors"] >= 1
    assert boom["recent_errors"][-1]["error"]["errorMessage"] == "boom: status"
    assert doc["functions"]["gate"]["concurrency"] == 1
    assert doc["functions"]["web"]["triggers"] == ["web/http[0]"]
    assert doc["sources"]["web/http[0]"] == {
        "kind": "http",
        "function": "web",
        "started": True,
        "error": None,
    }


async def test_openapi_document_is_valid_openapi_3_1(app: App) -> None:
    async with app.client() as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    invoke = doc["paths"]["/2015-03-31/functions/{name}/invocations"]["post"]
    assert {"200", "202", "204", "404", "413", "429"} <= set(invoke["responses"])
    assert {"/healthz", "/readyz", "/metrics", "/status", "/web"} <= set(doc["paths"])
    assert set(doc["paths"]["/web"]) == {"get"}


# -- auth ------------------------------------------------------------------------------

AUTH_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
    triggers:
      - http: {path: /open, methods: [GET], auth: none}
      - http: {path: /closed, methods: [GET]}
"""


async def test_bearer_tokens_guard_the_invoke_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "first-token-0123456, second-token-012345")
    config = write_app(tmp_path, AUTH_YAML, {"fns.py": FNS})
    async with running_app(config) as runtime, client_of(runtime) as http:
        path = INVOKE.format("echo")
        r = await http.post(path, json={})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert r.headers["x-amzn-ErrorType"] == "UnauthorizedException"
        for bad in (
            "Bearer wrong",
            "Bearer first-token-0123456-x",
            "Basic first-token-0123456",
            "first-token-0123456",
        ):
            r = await http.post(path, json={}, headers={"Authorization": bad})
            assert r.status_code == 401, bad
        for good in ("first-token-0123456", "second-token-012345"):
            r = await http.post(path, json={"t": good}, headers=_bearer(good))
            assert (r.status_code, r.json()) == (200, {"t": good})
        # health and readiness stay open; metrics and status need the token
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/status")).status_code == 401
        assert (
            await http.get("/metrics", headers=_bearer("second-token-012345"))
        ).status_code == 200
        assert (
            await http.get("/status", headers=_bearer("first-token-0123456"))
        ).status_code == 200
        # function URLs: `auth: none` is public, the default needs the token
        assert (await http.get("/open")).status_code == 200
        assert (await http.get("/closed")).status_code == 401
        assert (
            await http.get("/closed", headers=_bearer("first-token-0123456"))
        ).status_code == 200


async def test_tokens_env_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_TOKENS", "mine-mine-mine-01")
    monkeypatch.setenv("EVENTRUN_TOKENS", "not-this-one-0123456")
    yaml = "server: {auth: {tokens_env: MY_API_TOKENS}}\n" + AUTH_YAML
    config = write_app(tmp_path, yaml, {"fns.py": FNS})
    async with running_app(config) as runtime, client_of(runtime) as http:
        path = INVOKE.format("echo")
        assert (
            await http.post(path, json={}, headers=_bearer("mine-mine-mine-01"))
        ).status_code == 200
        r = await http.post(path, json={}, headers=_bearer("not-this-one-0123456"))
        assert r.status_code == 401


async def test_process_handlers_never_see_the_tokens_or_other_functions_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_TOKENS", "mine-mine-mine-01")
    monkeypatch.setenv("EVENTRUN_TOKENS", "also-secret-012345")
    monkeypatch.setenv("LANG", "C.UTF-8")
    yaml = """
    server: {auth: {tokens_env: MY_API_TOKENS}}
    store: {url: "sqlite:///state.db"}
    functions:
      env:
        handler: envs:environ
        environment: {OWN: mine-only}
        inherit_env: ["*"]  # everything, but never the token variables
      other:
        handler: envs:environ
        environment: {OTHER: not-for-env}
    """
    files = {"envs.py": "import os\ndef environ(event, context):\n    return dict(os.environ)\n"}
    config = write_app(tmp_path, yaml, files)
    async with running_app(config) as runtime, client_of(runtime) as http:
        r = await http.post(INVOKE.format("env"), json={}, headers=_bearer("mine-mine-mine-01"))
    assert r.status_code == 200
    env = r.json()
    assert env["OWN"] == "mine-only"
    assert env["LANG"] == "C.UTF-8"
    assert not {"MY_API_TOKENS", "EVENTRUN_TOKENS", "OTHER"} & set(env)
    assert not {"mine-mine-mine-01", "also-secret-012345", "not-for-env"} & set(env.values())


def client_of(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}", timeout=30)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_non_loopback_bind_without_tokens_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTRUN_TOKENS", raising=False)
    config = write_app(tmp_path, "server: {host: 0.0.0.0, port: 0}\n" + AUTH_YAML, {"fns.py": FNS})
    runtime = Runtime(load_config(config), port=0)
    with pytest.raises(ConfigError, match=r"EVENTRUN_TOKENS") as caught:
        await runtime.serve(anyio.Event())
    assert "0.0.0.0" in str(caught.value)
    assert runtime.bound_port is None  # refused before listening


async def test_non_loopback_bind_with_tokens_starts_and_requires_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "t0k-t0k-t0k-t0k-t0k")
    config = write_app(tmp_path, "server: {host: 0.0.0.0}\n" + AUTH_YAML, {"fns.py": FNS})
    async with running_app(config) as runtime:
        assert runtime.bound_port is not None
        with socket.create_connection(("127.0.0.1", runtime.bound_port), timeout=5):
            pass
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.bound_port}") as http:
            assert (await http.post(INVOKE.format("echo"), json={})).status_code == 401
            r = await http.post(
                INVOKE.format("echo"), json={}, headers=_bearer("t0k-t0k-t0k-t0k-t0k")
            )
            assert r.status_code == 200


def test_auth_mode_none_on_a_non_loopback_host_is_a_config_error(tmp_path: Path) -> None:
    yaml = "server: {host: 0.0.0.0, auth: {mode: none}}\n" + AUTH_YAML
    config = write_app(tmp_path, yaml, {"fns.py": FNS})
    with pytest.raises(ConfigError, match=r"server\.auth\.mode") as caught:
        load_config(config)
    assert "0.0.0.0" in str(caught.value)


async def test_auth_mode_none_on_loopback_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "ignored-ignored-ignored")
    config = write_app(tmp_path, "server: {auth: {mode: none}}\n" + AUTH_YAML, {"fns.py": FNS})
    async with running_app(config) as runtime, client_of(runtime) as http:
        assert (await http.post(INVOKE.format("echo"), json={})).status_code == 200
        assert (await http.get("/closed")).status_code == 200


@pytest.mark.parametrize("tokens", ["", "t0k-t0k-t0k-t0k-1"], ids=["no-tokens", "tokens"])
async def test_open_loopback_api_is_announced_by_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokens: str
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", tokens)
    config = write_app(tmp_path, "server: {host: 127.0.0.1}\n" + AUTH_YAML, {"fns.py": FNS})
    with structlog.testing.capture_logs() as logs:
        async with running_app(config) as runtime, client_of(runtime) as http:
            r = await http.post(INVOKE.format("echo"), json={})
    warnings = [e for e in logs if e["event"] == "server.auth_disabled"]
    if tokens:
        assert r.status_code == 401
        assert warnings == []
    else:
        assert r.status_code == 200  # open, as the warning says
        assert warnings == [
            {
                "event": "server.auth_disabled",
                "log_level": "warning",
                "reason": "no tokens configured; loopback only",
            }
        ]


# -- cross-site and DNS-rebinding requests (security issue #31) -------------------------

EVIL = "http://evil.example"


async def test_a_foreign_host_header_is_misdirected(app: App) -> None:
    """A page on evil.example whose name was re-pointed at 127.0.0.1 (DNS rebinding)
    sends ``Host: evil.example:PORT``: nothing is answered but 421."""
    port = app.runtime.bound_port
    target = app.root / "rebound.json"
    async with app.client() as http:
        evil = {"Host": f"evil.example:{port}"}
        for method, path in (("GET", "/status"), ("GET", "/dlq"), ("GET", "/healthz")):
            assert (await http.request(method, path, headers=evil)).status_code == 421, path
        r = await http.post(
            INVOKE.format("sidefx"), json={"path": str(target), "value": 1}, headers=evil
        )
        assert r.status_code == 421
        assert not target.exists()
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert (await http.get("/status", headers={"Host": host})).status_code == 200


async def test_invoke_refuses_a_cross_origin_simple_request(app: App) -> None:
    """What a web page can send without a preflight: text/plain, a foreign Origin."""
    target = app.root / "forged.json"
    body = json.dumps({"path": str(target), "value": 1})
    async with app.client() as http:
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            r = await http.post(
                INVOKE.format("sidefx"),
                content=body,
                headers={"Origin": EVIL, "Content-Type": content_type},
            )
            assert r.status_code == 403, content_type
            assert r.headers["x-amzn-ErrorType"] == "AccessDeniedException"
        assert not target.exists()
        # no Origin (boto3, the AWS CLI, curl), or the daemon's own: accepted
        ok = await http.post(INVOKE.format("echo"), content=b'{"a": 1}')
        assert (ok.status_code, ok.json()) == (200, {"a": 1})
        own = {"Origin": app.url}
        assert (await http.post(INVOKE.format("echo"), json={}, headers=own)).status_code == 200


async def test_admin_writes_need_the_request_header_or_json(app: App) -> None:
    path = "/dlq/local:nothing-here/redrive"
    async with app.client() as http:
        # a form post or text/plain (simple requests a page can send): refused
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            r = await http.post(path, content=b"{}", headers={"Content-Type": content_type})
            assert r.status_code == 403, content_type
            r = await http.post(
                path, content=b"{}", headers={"Content-Type": content_type, "Origin": EVIL}
            )
            assert r.status_code == 403, content_type
        assert (await http.delete("/dlq/local:nothing-here")).status_code == 403
        # JSON or X-Eventrun-Request (each needs a preflight cross-origin): accepted...
        assert (await http.post(path, json={"dry_run": True})).status_code == 200
        marked = {"X-Eventrun-Request": "1"}
        assert (await http.post(path, content=b"{}", headers=marked)).status_code == 200
        r = await http.delete("/dlq/local:nothing-here", headers=marked)
        assert r.status_code == 200
        # ...unless the browser says another site sent it
        r = await http.post(path, json={}, headers={**marked, "Origin": EVIL})
        assert r.status_code == 403


async def test_allowed_hosts_adds_names_and_star_opts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTRUN_TOKENS", raising=False)
    for hosts, evil_status in (("[eventrun.internal]", 421), ('["*"]', 200)):
        yaml = f"server: {{allowed_hosts: {hosts}}}\n" + AUTH_YAML
        config = write_app(tmp_path, yaml, {"fns.py": FNS})
        async with running_app(config) as runtime, client_of(runtime) as http:
            port = runtime.bound_port
            for host in ("eventrun.internal", f"eventrun.internal:{port}"):
                assert (await http.get("/open", headers={"Host": host})).status_code == 200
            r = await http.get("/open", headers={"Host": "evil.example"})
            assert r.status_code == evil_status, hosts


async def test_openapi_needs_the_token_when_tokens_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "openapi-token-0123456")
    config = write_app(tmp_path, AUTH_YAML, {"fns.py": FNS})
    async with running_app(config) as runtime, client_of(runtime) as http:
        r = await http.get("/openapi.json")
        assert r.status_code == 401
        assert "/closed" not in r.text
        r = await http.get("/openapi.json", headers=_bearer("openapi-token-0123456"))
        assert r.status_code == 200
        assert "/closed" in r.json()["paths"]


async def test_tokens_shorter_than_16_characters_refuse_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTRUN_TOKENS", "long-enough-token-1,short-tok")
    config = write_app(tmp_path, AUTH_YAML, {"fns.py": FNS})
    runtime = Runtime(load_config(config), port=0)
    with pytest.raises(ConfigError, match=r"\$EVENTRUN_TOKENS.*shorter than 16") as caught:
        await runtime.serve(anyio.Event())
    assert "short-tok" not in str(caught.value)
    assert runtime.bound_port is None


# -- bounded queues ------------------------------------------------------------------------

QUEUE_YAML = """
store: {url: "sqlite:///state.db", max_queue_depth: 3, max_queue_bytes: 2500}
functions:
  boom:
    handler: fns:boom
"""


async def test_a_full_async_queue_is_429_and_the_store_does_not_grow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #31 finding 9: Event invokes of a failing function (its entries wait an hour
    for their retry) fill ``async:boom`` up to the caps, then every further one is refused
    with Lambda's 429 and nothing more is stored."""
    monkeypatch.delenv("EVENTRUN_TOKENS", raising=False)
    config = write_app(tmp_path, QUEUE_YAML, {"fns.py": FNS})
    big = json.dumps({"why": "x" * 990}).encode()
    event = {"X-Amz-Invocation-Type": "Event"}
    path = INVOKE.format("boom")
    async with (
        running_app(config, async_retry_delay_s=3600) as runtime,
        client_of(runtime) as http,
    ):
        for _ in range(2):
            assert (await http.post(path, content=big, headers=event)).status_code == 202
        r = await http.post(path, content=big, headers=event)  # 3 x 1000 B > 2500 B
        assert r.status_code == 429
        assert r.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert r.headers["Retry-After"] == "1"
        assert r.json()["Type"] == "User"
        assert "async:boom" in r.json()["message"]
        assert "store.max_queue_bytes (2500 bytes)" in r.json()["message"]
        assert (await http.post(path, content=b"{}", headers=event)).status_code == 202
        usage = await runtime.store.usage("async:boom")
        assert usage == (3, 2 * len(big) + 2)
        for _ in range(5):
            r = await http.post(path, content=b"{}", headers=event)
            assert r.status_code == 429
            assert "store.max_queue_depth (3 entries)" in r.json()["message"]
        assert await runtime.store.usage("async:boom") == usage

        def call() -> Any:
            return lambda_client(f"http://127.0.0.1:{runtime.bound_port}").invoke(
                FunctionName="boom", InvocationType="Event", Payload=b"{}"
            )

        with pytest.raises(ClientError) as caught:
            await anyio.to_thread.run_sync(call)
        assert type(caught.value).__name__ == "TooManyRequestsException"
        assert await runtime.store.usage("async:boom") == usage
        text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("eventrun_queue_full_total", (("queue", "async:boom"),))] == 7
