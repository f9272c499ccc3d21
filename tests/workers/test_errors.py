"""Lambda's shapes for return values and failures."""

from __future__ import annotations

import decimal
import json
import signal

import pytest

from eventrun.workers._errors import (
    MarshalFailure,
    exit_reason,
    handler_error,
    marshal,
    timeout_error,
)


def test_marshal_like_awslambdaric() -> None:
    assert marshal(None) == b"null"
    assert marshal({"pi": decimal.Decimal("3.14159")}) == b'{"pi": 3.14159}'
    assert marshal({"s": "é"}) == '{"s": "é"}'.encode()
    assert marshal([1, (2, 3)]) == b"[1, [2, 3]]"
    nested = marshal({"a": [decimal.Decimal("1.10"), decimal.Decimal("-2E+3")]})
    assert nested == b'{"a": [1.1, -2000.0]}'  # as a float, as Lambda's runtime writes it
    with pytest.raises(MarshalFailure, match="Unable to marshal response: Object of type set"):
        marshal({1, 2})


def test_handler_error_shape() -> None:
    def user_code() -> None:
        raise RuntimeError("bad thing")

    try:
        user_code()
    except RuntimeError as exc:
        body = json.loads(handler_error(exc, "r-9", exc.__traceback__))
    assert list(body) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert body["errorMessage"] == "bad thing"
    assert body["errorType"] == "RuntimeError"
    assert body["requestId"] == "r-9"
    assert body["stackTrace"][-1].strip().endswith('raise RuntimeError("bad thing")')


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (3, "Runtime exited with error: exit status 3"),
        (-signal.SIGSEGV, "Runtime exited with error: signal: segmentation fault"),
        (-signal.SIGKILL, "Runtime exited with error: signal: killed"),
        (0, "Runtime exited without providing a reason"),
        (None, "Runtime exited without providing a reason"),
        (-200, "Runtime exited with error: signal 200"),  # no such signal: its number
    ],
)
def test_exit_reason(returncode: int | None, reason: str) -> None:
    assert exit_reason(returncode) == reason


def test_timeout_message() -> None:
    assert json.loads(timeout_error("abc", 1)) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": "RequestId: abc Error: Task timed out after 1.00 seconds",
    }
