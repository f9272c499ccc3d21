"""The ``kinesis:CONNECTION/STREAM`` sink: PutRecords with aiobotocore.

``SinkSpec.target`` is ``CONNECTION/STREAM`` (a stream name or ARN). Messages go out in
order, in chunks of at most 500 records and 5 MiB, one chunk after the other; each
record's partition key is the message's key (its input's key: the Kinesis partition key,
Kafka key, SQS group...), else the ``PartitionKey`` attribute, else a hash of the payload.
The entries a partial PutRecords answer reports failed (throttled, internal errors) are
sent again, alone, a few times with backoff: a record of a key whose earlier record
failed may then land after a later one (Kinesis orders by arrival; PutRecords gives no
order guarantee across a partial failure).

Errors: transport errors, throttling, server and permission errors raise
:class:`SinkUnavailable` (the caller keeps the messages and retries); a missing stream or
records Kinesis refuses (too large, bad key) raise :class:`SinkRejected`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import structlog

from eventrun.abc import OutMessage, SinkSpec
from eventrun.brokers import kinesis as client_util
from eventrun.exceptions import SinkRejected, SinkUnavailable

__all__ = ["KinesisSink", "create"]

MAX_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
RETRIES = 4

log = structlog.get_logger("eventrun.sinks.kinesis")


def create(spec: SinkSpec) -> KinesisSink:
    """Entry point ``eventrun.sinks: kinesis``."""
    return KinesisSink(spec)


class KinesisSink:
    """Puts OutMessages into one Kinesis stream."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        _conn, sep, stream = spec.target.partition("/")
        if not sep or not stream:
            raise SinkRejected(f"{spec.url}: expected kinesis:CONNECTION/STREAM")
        self.stream = stream
        self._where = {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        try:
            ctx = client_util.open_client("kinesis", self.spec.connection)
        except ValueError as exc:
            raise SinkRejected(f"{self.spec.url}: {exc}") from exc
        self._client = await self._stack.enter_async_context(ctx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()
        self._client = None

    def _translate(self, exc: BaseException) -> Exception:
        kind = client_util.classify(exc)
        detail = client_util.describe(exc)
        if kind == "missing":
            return SinkRejected(f"{self.spec.url}: stream {self.stream!r} does not exist: {detail}")
        if kind == "rejected":
            return SinkRejected(f"{self.spec.url}: Kinesis refused the records: {detail}")
        if kind in ("auth", "unavailable", "throttled"):
            return SinkUnavailable(f"{self.spec.url}: Kinesis unavailable: {detail}")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    @staticmethod
    def _entry(message: OutMessage) -> dict[str, Any]:
        key = message.key or message.attributes.get("PartitionKey")
        if not key:
            key = hashlib.sha256(message.payload).hexdigest()
        return {"Data": message.payload, "PartitionKey": key[:256]}

    @staticmethod
    def _chunks(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        chunks: list[list[dict[str, Any]]] = []
        size = 0
        for entry in entries:
            entry_size = len(entry["Data"]) + len(entry["PartitionKey"])
            full = chunks and (
                len(chunks[-1]) == MAX_RECORDS or size + entry_size > MAX_BATCH_BYTES
            )
            if not chunks or full:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += entry_size
        return chunks

    async def send(self, messages: Sequence[OutMessage]) -> None:
        """Deliver every message, or raise SinkUnavailable / SinkRejected."""
        if not messages:
            return
        if self._client is None:
            raise SinkUnavailable(f"{self.spec.url}: send() outside 'async with'")
        for chunk in self._chunks([self._entry(m) for m in messages]):
            await self._put(chunk)

    async def _put(self, entries: list[dict[str, Any]]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                answer = await self._client.put_records(Records=entries, **self._where)
            except Exception as exc:
                raise self._translate(exc) from exc
            if not answer.get("FailedRecordCount"):
                return
            results = answer.get("Records", [])
            entries = [e for e, r in zip(entries, results, strict=False) if r.get("ErrorCode")]
            if attempt < RETRIES:
                await anyio.sleep(0.1 * 2**attempt)
        log.warning("kinesis.sink_put_failed", url=self.spec.url, entries=len(entries))
        raise SinkUnavailable(
            f"{self.spec.url}: {len(entries)} record(s) still failing after {RETRIES} retries"
        )
