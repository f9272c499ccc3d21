"""The trace header of the invocation being made, and X-Ray / W3C header conversions.

``TRACE_HEADER`` is set (by ``eventrun.observe``'s invocation span) to Lambda's
``_X_AMZN_TRACE_ID`` form of the current span while the runtime hands an invocation to a
runner; a worker process gets it with the invocation and sets ``_X_AMZN_TRACE_ID`` (and,
when OpenTelemetry is installed, the current context) around the handler call.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["TRACE_HEADER", "traceparent_to_xray", "xray_to_traceparent"]

TRACE_HEADER: ContextVar[str | None] = ContextVar("eventrun_trace_header", default=None)


def xray_to_traceparent(header: str) -> str | None:
    """``Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1``
    (SQS ``AWSTraceHeader``, Lambda's ``_X_AMZN_TRACE_ID``) as a W3C ``traceparent``."""
    parts = dict(p.split("=", 1) for p in header.split(";") if "=" in p)
    root = parts.get("Root", "").split("-")
    parent = parts.get("Parent", "")
    if len(root) != 3 or len(root[1] + root[2]) != 32 or len(parent) != 16:
        return None
    sampled = "01" if parts.get("Sampled", "1") == "1" else "00"
    return f"00-{root[1]}{root[2]}-{parent}-{sampled}"


def traceparent_to_xray(trace_id: str, span_id: str, sampled: bool) -> str:
    """Lambda's ``_X_AMZN_TRACE_ID`` for a W3C trace id and span id (hex)."""
    flag = "1" if sampled else "0"
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={span_id};Sampled={flag}"
