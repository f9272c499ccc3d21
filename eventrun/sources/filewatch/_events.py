"""S3 event notification records for the ``filewatch`` source (lambda-semantics §3.5).

One record per file version, exactly the S3 shape (``eventVersion`` 2.1)::

    ObjectCreated:Put      a complete file appeared or a new version of it (any way:
                           written in place, renamed into place, copied)
    ObjectRemoved:Delete   a file that had been delivered disappeared

The bucket is the watched directory's name; the object key is the path relative to it
with ``/`` separators, URL-encoded as S3 does in notifications (``quote_plus``, ``/`` kept,
spaces as ``+``); ``eTag`` is the MD5 hex of the content without quotes; ``sequencer`` is
an 18-digit upper-case hex number, strictly increasing per source (nanoseconds of wall
time, bumped on ties), so events for the same key order correctly, also across restarts
as long as the wall clock does not step back. Removal records carry only ``key`` and
``sequencer`` in ``object``, like S3's.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote_plus

__all__ = ["DEFAULT_REGION", "MAX_EVENT_BYTES", "RecordBuilder", "encode_key", "split_batches"]

DEFAULT_REGION = "us-east-1"
MAX_EVENT_BYTES = 1_000_000
"""Lambda's asynchronous payload limit is 1 MB; batches are split to stay under it."""
_PRINCIPAL = "eventrun"
T = TypeVar("T")


def encode_key(rel: str) -> str:
    """S3 notification key encoding: ``a dir/b=c.txt`` -> ``a+dir/b%3Dc.txt``."""
    return quote_plus(rel, safe="/")


def event_time(epoch_s: float) -> str:
    """``2019-09-03T19:37:27.192Z``."""
    stamp = datetime.fromtimestamp(epoch_s, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class RecordBuilder:
    """Builds records for one trigger; owns the sequencer."""

    def __init__(self, bucket: str, configuration_id: str, region: str | None = None) -> None:
        self.bucket = bucket
        self.configuration_id = configuration_id
        self.region = region or os.environ.get("AWS_REGION") or DEFAULT_REGION
        self._last_seq = 0

    def _sequencer(self, now: float) -> str:
        self._last_seq = max(int(now * 1e9), self._last_seq + 1)
        return f"{self._last_seq:018X}"

    def _record(self, name: str, obj: dict[str, Any], now: float) -> dict[str, Any]:
        return {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": self.region,
            "eventTime": event_time(now),
            "eventName": name,
            "userIdentity": {"principalId": f"AWS:{_PRINCIPAL}"},
            "requestParameters": {"sourceIPAddress": "127.0.0.1"},
            "responseElements": {
                "x-amz-request-id": secrets.token_hex(8).upper(),
                "x-amz-id-2": base64.b64encode(secrets.token_bytes(57)).decode(),
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": self.configuration_id,
                "bucket": {
                    "name": self.bucket,
                    "ownerIdentity": {"principalId": _PRINCIPAL},
                    "arn": f"arn:aws:s3:::{self.bucket}",
                },
                "object": obj,
            },
        }

    def created(self, rel: str, size: int, etag: str, now: float) -> dict[str, Any]:
        seq = self._sequencer(now)
        obj = {"key": encode_key(rel), "size": size, "eTag": etag, "sequencer": seq}
        return self._record("ObjectCreated:Put", obj, now)

    def removed(self, rel: str, now: float) -> dict[str, Any]:
        obj = {"key": encode_key(rel), "sequencer": self._sequencer(now)}
        return self._record("ObjectRemoved:Delete", obj, now)


def split_batches(
    items: Sequence[T],
    record_of: Callable[[T], dict[str, Any]],
    batch_size: int,
    max_bytes: int = MAX_EVENT_BYTES,
) -> list[list[T]]:
    """Chunks of at most ``batch_size`` items whose ``{"Records": [...]}`` fits ``max_bytes``."""
    batches: list[list[T]] = []
    current: list[T] = []
    size = 16
    for item in items:
        n = len(json.dumps(record_of(item), separators=(",", ":"))) + 1
        if current and (len(current) >= batch_size or size + n > max_bytes):
            batches.append(current)
            current, size = [], 16
        current.append(item)
        size += n
    if current:
        batches.append(current)
    return batches
