"""Lambda's error and result shapes, written once for the process and inline runtimes.

* :func:`handler_error` shapes an exception as the Python runtime (awslambdaric) does:
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}``, the stack trace being
  ``traceback.format_list`` of the user's frames (the runtime's own frames stripped).
* :func:`runtime_error` is the shape the Lambda service itself reports
  (``Sandbox.Timedout``, ``Runtime.ExitError``, ``Runtime.OutOfMemory``).
* :func:`marshal` serialises a return value like awslambdaric (``json.dumps``, Decimal as
  a number, ``ensure_ascii=False``); anything else raises :class:`MarshalFailure`.

Imported by worker processes: stdlib only.
"""

from __future__ import annotations

import decimal
import json
import math
import signal
import traceback
from types import TracebackType
from typing import Any

__all__ = [
    "MarshalFailure",
    "exit_reason",
    "handler_error",
    "init_error",
    "marshal",
    "marshal_error",
    "runtime_error",
    "timeout_error",
]


class MarshalFailure(Exception):
    """The handler's return value is not JSON-serialisable (``Runtime.MarshalError``)."""


class _Encoder(json.JSONEncoder):
    def __init__(self) -> None:
        super().__init__(ensure_ascii=False, allow_nan=True)

    def default(self, o: Any) -> Any:
        if isinstance(o, decimal.Decimal):
            # a number, unquoted, as awslambdaric writes it: its DecimalStr(float) wrapper
            # is printed by json with float.__repr__, so Decimal("1.10") is 1.1 there too
            return math.nan if o.is_nan() else float(o)
        return super().default(o)


_encode = _Encoder().encode


def marshal(value: object) -> bytes:
    """JSON bytes of a handler's return value (``None`` -> ``b"null"``)."""
    if value is None:
        return b"null"
    try:
        return _encode(value).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise MarshalFailure(f"Unable to marshal response: {exc}") from exc


def handler_error(exc: BaseException, request_id: str, tb: TracebackType | None = None) -> bytes:
    """Lambda's error JSON for an exception a handler raised.

    ``tb`` is the traceback starting at the user's first frame (pass
    ``exc.__traceback__.tb_next`` from the frame that called the handler).
    """
    frames = traceback.format_list(traceback.extract_tb(tb)) if tb is not None else []
    return _dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": frames,
        }
    )


def marshal_error(message: str, request_id: str) -> bytes:
    return _dumps(
        {
            "errorMessage": message,
            "errorType": "Runtime.MarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }
    )


def init_error(error_type: str, message: str, stack: list[str] | None = None) -> bytes:
    """An init-phase fault (import error, missing handler), as awslambdaric reports it."""
    return _dumps(
        {
            "errorMessage": message,
            "errorType": error_type,
            "requestId": "",
            "stackTrace": stack or [],
        }
    )


def runtime_error(error_type: str, request_id: str, reason: str) -> bytes:
    """The service-side shape: ``{"errorType", "errorMessage": "RequestId: X Error: ..."}``."""
    return _dumps(
        {"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {reason}"}
    )


def timeout_error(request_id: str, timeout_s: float) -> bytes:
    return runtime_error(
        "Sandbox.Timedout", request_id, f"Task timed out after {timeout_s:.2f} seconds"
    )


# Go's syscall.WaitStatus wording, which is what Lambda's messages quote.
_SIGNAL_WORDS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGKILL: "killed",
    signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction",
    signal.SIGINT: "interrupt",
    signal.SIGHUP: "hangup",
    signal.SIGPIPE: "broken pipe",
    signal.SIGQUIT: "quit",
}


def exit_reason(returncode: int | None) -> str:
    """``Runtime exited with error: exit status 3`` / ``...: signal: segmentation fault``.

    ``returncode`` follows ``subprocess``: negative for a signal, None when unknown.
    """
    if returncode is None or returncode == 0:
        return "Runtime exited without providing a reason"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"Runtime exited with error: signal {-returncode}"
        word = _SIGNAL_WORDS.get(sig, sig.name)
        return f"Runtime exited with error: signal: {word}"
    return f"Runtime exited with error: exit status {returncode}"


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
