"""Schemathesis against the live in-process HTTP server and its own ``/openapi.json``:
no 5xx, and every response (status code, content type, body) matches the document.

Cases are generated both with a valid bearer token and without one, positive and
negative (schema-violating) inputs; the Invoke API runs a real worker process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests._runtime_kit import running_app, write_app

TOKEN = "fuzz-token-1234567"
APP_YAML = """
server: {auth: {tokens_env: EVENTRUN_FUZZ_TOKENS}}
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
    timeout: 5s
    concurrency: 2
    triggers:
      - http: {path: "/hello/{name}", methods: [GET, POST], auth: none}
  boom:
    handler: fns:boom
    timeout: 5s
"""
FNS = """
def echo(event, context):
    return event


def boom(event, context):
    raise ValueError("boom")
"""
# every operation the document must list for APP_YAML (a document that lost one, or a
# run that sent nothing, fails the tests below)
OPERATIONS = {
    "POST /2015-03-31/functions/{name}/invocations",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /status",
    "GET /status/history",
    "GET /hello/{name}",
    "POST /hello/{name}",
}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("openapi")
    config = write_app(root, APP_YAML, {"fns.py": FNS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVENTRUN_FUZZ_TOKENS", TOKEN)
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(running_app(config)) as runtime,
        ):
            url = f"http://127.0.0.1:{runtime.bound_port}"
            # the document lists the function URLs: it needs the token too
            yield schemathesis.openapi.from_url(
                f"{url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
            )


def _run_every_operation(api_schema: Any, headers: dict[str, str], examples: int) -> Counter[str]:
    """Drive each operation of the document with its own hypothesis strategy (positive and
    negative cases); return how many responses came back per operation."""
    answered: Counter[str] = Counter()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers, timeout=30)  # raises unless answered
                answered[case.operation.label] += 1

            try:
                run()
            except Unsatisfiable:
                # nothing to make invalid (no parameters, no body): only positive cases
                assert mode is GenerationMode.NEGATIVE, operation.label
    return answered


def test_api_matches_its_openapi_document(api_schema: Any) -> None:
    answered = _run_every_operation(api_schema, {"Authorization": f"Bearer {TOKEN}"}, 25)
    print(f"schemathesis: {answered.total()} cases with a token: {dict(answered)}")
    assert set(answered) == OPERATIONS
    assert all(n > 0 for n in answered.values())


def test_api_without_a_token_matches_its_openapi_document(api_schema: Any) -> None:
    answered = _run_every_operation(api_schema, {}, 5)
    print(f"schemathesis: {answered.total()} cases without a token: {dict(answered)}")
    assert set(answered) == OPERATIONS
    assert all(n > 0 for n in answered.values())
