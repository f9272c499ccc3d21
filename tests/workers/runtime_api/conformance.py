"""The Runtime API conformance table: endpoint x case -> status, body, effect.

Each row is an expectation that ``test_conformance.py`` checks against a live endpoint
and that docs/runtimes.md shows (``python -m tests.workers.runtime_api.conformance``
prints the table; a test keeps the doc current).
"""

from __future__ import annotations

from dataclasses import dataclass

NEXT = "GET /runtime/invocation/next"
RESPONSE = "POST /runtime/invocation/{id}/response"
ERROR = "POST /runtime/invocation/{id}/error"
INIT_ERROR = "POST /runtime/init/error"


@dataclass(frozen=True)
class Row:
    key: str
    endpoint: str
    case: str
    status: int
    body: str
    effect: str


ROWS = [
    Row(
        "next_delivers",
        NEXT,
        "an invocation is handed over",
        200,
        "the event",
        "headers Lambda-Runtime-Aws-Request-Id, -Deadline-Ms, -Invoked-Function-Arn, "
        "-Trace-Id, -Client-Context and -Cognito-Identity (when set); blocks until then",
    ),
    Row(
        "next_while_running",
        NEXT,
        "the invocation in flight is unanswered",
        403,
        '{"errorType": "InvalidStateTransition", ...}',
        "nothing changes",
    ),
    Row(
        "next_after_init_error",
        NEXT,
        "after /init/error",
        403,
        '{"errorType": "InvalidStateTransition", ...}',
        "nothing changes",
    ),
    Row(
        "response_ok",
        RESPONSE,
        "the id in flight",
        202,
        '{"status": "OK"}',
        "the caller gets the body as the result",
    ),
    Row(
        "response_chunked",
        RESPONSE,
        "Transfer-Encoding: chunked, with trailers",
        202,
        '{"status": "OK"}',
        "the chunks joined are the result",
    ),
    Row(
        "response_streaming",
        RESPONSE,
        "Lambda-Runtime-Function-Response-Mode: streaming, HTTP-integration prelude",
        202,
        '{"status": "OK"}',
        "read whole; prelude + 8 NUL bytes + body become {statusCode, headers, cookies, "
        "body (base64)} for a function URL",
    ),
    Row(
        "response_streaming_error",
        RESPONSE,
        "streaming, error trailers Lambda-Runtime-Function-Error-Type / -Body (base64)",
        202,
        '{"status": "OK"}',
        "the caller gets the decoded error body; the error type is the trailer's",
    ),
    Row(
        "response_wrong_id",
        RESPONSE,
        "another id",
        400,
        '{"errorType": "InvalidRequestID", "errorMessage": "Invalid request ID"}',
        "the invocation still waits",
    ),
    Row(
        "response_twice",
        RESPONSE,
        "an id already answered",
        400,
        '{"errorType": "InvalidRequestID", "errorMessage": "Invalid request ID"}',
        "the first answer stands",
    ),
    Row(
        "response_before_next",
        RESPONSE,
        "no invocation handed over yet",
        403,
        '{"errorType": "InvalidStateTransition", ...}',
        "nothing changes",
    ),
    Row(
        "response_too_large",
        RESPONSE,
        "a body over 6 MB (6291456 bytes)",
        413,
        '{"errorType": "RequestEntityTooLarge", ...}',
        "the caller gets Function.ResponseSizeTooLarge; the connection stays usable",
    ),
    Row(
        "error_json",
        ERROR,
        "a JSON body with errorType",
        202,
        '{"status": "OK"}',
        "the caller gets the body; the error type is its errorType",
    ),
    Row(
        "error_header_only",
        ERROR,
        "a non-JSON body, Lambda-Runtime-Function-Error-Type header",
        202,
        '{"status": "OK"}',
        "the caller gets {errorMessage: body, errorType: the header}",
    ),
    Row(
        "init_error",
        INIT_ERROR,
        "during init (before the first /next)",
        202,
        '{"status": "OK"}',
        "the invocation waiting for this process fails with it; the process is replaced",
    ),
    Row(
        "init_error_late",
        INIT_ERROR,
        "after the first /next",
        403,
        '{"errorType": "InvalidStateTransition", ...}',
        "nothing changes",
    ),
    Row(
        "unknown_path",
        "any other path",
        "-",
        404,
        "404 page not found",
        "-",
    ),
]


def markdown() -> str:
    lines = [
        "| Endpoint | Case | Status | Body | Effect |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        body = row.body.replace("|", "\\|")
        lines.append(f"| `{row.endpoint}` | {row.case} | {row.status} | `{body}` | {row.effect} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
