"""Leaf helpers every part may use: one-line message text, request ids, and URL redaction.

What it does: small, dependency-free functions with one job each; nothing here knows
about functions, triggers or the runtime.

May import: nothing of eventrun (the bottom layer).

Exports: ``one_line``, ``new_request_id``, ``public_destination``, ``redact_url``,
``TRACE_HEADER``, ``xray_to_traceparent``, ``traceparent_to_xray``.
"""

from __future__ import annotations

from eventrun.common._ids import new_request_id
from eventrun.common._text import one_line
from eventrun.common._trace import TRACE_HEADER, traceparent_to_xray, xray_to_traceparent
from eventrun.common._urls import public_destination, redact_url

__all__ = [
    "TRACE_HEADER",
    "new_request_id",
    "one_line",
    "public_destination",
    "redact_url",
    "traceparent_to_xray",
    "xray_to_traceparent",
]
