"""Lambda's failure and destination records, built from dispatcher outcomes.

Shapes follow reference/lambda-semantics.md §1.4/§1.5 (stream on-failure records) and §2
(asynchronous-invocation destination records). Beyond Lambda, every stream failure record
also carries ``payload``, the original batch event (Lambda includes it only for S3
destinations), so a DLQ entry can be inspected and redriven.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["async_destination_record", "function_arn", "iso_ms", "stream_failure_record"]


def iso_ms(epoch_s: float | None = None) -> str:
    """``2019-11-14T00:38:06.021Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def function_arn(function: str, region: str = "us-east-1") -> str:
    return f"arn:aws:lambda:{region}:000000000000:function:{function}"


def stream_failure_record(
    *,
    request_id: str,
    function: str,
    condition: str,
    invoke_count: int,
    function_error: str | None,
    batch_info: Mapping[str, Any],
    payload: Any,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """The on-failure record of an event source mapping (condition
    ``RetryAttemptsExhausted``, ``RecordAgeExceeded`` or ``MaximumPayloadSizeExceeded``)."""
    response: dict[str, Any] | None = {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": function_error or "Unhandled",
    }
    if condition == "MaximumPayloadSizeExceeded":
        response = None
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn(function, region),
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso_ms(),
        **batch_info,
        "payload": payload,
    }


def async_destination_record(
    *,
    request_id: str,
    function: str,
    condition: str,
    invoke_count: int,
    request_payload: Any,
    response_payload: Any,
    function_error: str | None,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """The destination record of an asynchronous invocation (condition ``Success``,
    ``RetriesExhausted`` or ``EventAgeExceeded``)."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_ms(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn(function, region) + ":$LATEST",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": request_payload,
    }
    if condition == "EventAgeExceeded" and invoke_count == 0:
        return record
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response["functionError"] = function_error
    record["responseContext"] = response
    record["responsePayload"] = response_payload
    return record
