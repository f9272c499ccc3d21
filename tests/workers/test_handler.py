"""Handler strings: both spellings, and Lambda's init errors."""

from __future__ import annotations

import json
import sys

import pytest

from eventrun.exceptions import HandlerImportError
from eventrun.workers import load_handler
from eventrun.workers._handler import HandlerLoadFailure, parse_handler

from .conftest import APPS, RunnerFactory, event


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("shop.mod:handler", ("shop.mod", "handler")),
        ("shop/mod.handler", ("shop.mod", "handler")),
        ("basic.handler", ("basic", "handler")),
        ("shop.mod:Api.route", ("shop.mod", "Api.route")),
    ],
)
def test_parse_both_spellings(handler: str, expected: tuple[str, str]) -> None:
    assert parse_handler(handler) == expected


@pytest.mark.parametrize("handler", ["nodot", "mod:", ":attr", "a:b:c"])
def test_malformed_handler(handler: str) -> None:
    with pytest.raises(HandlerLoadFailure) as info:
        parse_handler(handler)
    assert info.value.error_type == "Runtime.MalformedHandlerName"


@pytest.mark.parametrize("handler", ["shop.mod:handler", "shop/mod.handler"])
def test_load_handler_resolves_relative_to_config_dir(handler: str) -> None:
    fn = load_handler(handler, APPS)
    assert fn({"x": 1}, None) == {"module": "shop.mod", "event": {"x": 1}}
    assert load_handler("shop.mod:Api.route", APPS)({}, None) == "routed"


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        ("broken.handler", "Runtime.ImportModuleError: Unable to import module 'broken'"),
        ("no_such_module.handler", "Unable to import module 'no_such_module'"),
        ("basic.not_there", "Runtime.HandlerNotFound: Handler 'not_there' missing on module"),
        (
            "raising.handler",
            "Runtime.ImportModuleError: Unable to import module 'raising': "
            "RuntimeError: SETTINGS_URL is not set",
        ),
        (
            "basic.INITS",
            "Runtime.HandlerNotFound: Handler 'INITS' on module 'basic' is not callable",
        ),
    ],
)
def test_load_handler_errors_are_clear(handler: str, fragment: str) -> None:
    with pytest.raises(HandlerImportError) as info:
        load_handler(handler, APPS)
    assert fragment in str(info.value)
    assert handler in str(info.value)


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        (
            "broken.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'broken': No module named 'module_that_does_not_exist'",
        ),
        (
            "basic.not_there",
            "Runtime.HandlerNotFound",
            "Handler 'not_there' missing on module 'basic'",
        ),
    ],
)
async def test_init_errors_become_results(
    process_runner: RunnerFactory, handler: str, error_type: str, message: str
) -> None:
    async with process_runner(handler=handler, min_warm=1) as runner:
        assert runner.statistics()["workers"] == 0  # the warm worker failed init
        result = await runner.invoke(event({}))
        again = await runner.invoke(event({}))  # init is retried, as on Lambda
    assert not result.ok
    assert result.error_type == error_type
    assert json.loads(result.payload) == {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": "",
        "stackTrace": [],
    }
    assert f"[ERROR] {error_type}: {message}" in result.logs
    assert again.error_type == error_type


def test_a_cached_built_in_or_installed_module_is_not_reimported() -> None:
    """A handler module named like a built-in (no file) or an installed module already
    imported is that module: only an app's own modules are dropped from the cache."""
    import time

    assert load_handler("time:monotonic", APPS) is time.monotonic
    assert load_handler("json:loads", APPS) is json.loads
    assert sys.modules["json"] is json
