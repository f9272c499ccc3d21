"""The ``sqs:CONNECTION/QUEUE`` sink: SendMessageBatch with aiobotocore.

``SinkSpec.target`` is ``CONNECTION/QUEUE`` where QUEUE is a queue name (resolved with
GetQueueUrl on first use) or a queue URL. Messages go out in chunks of at most 10 entries
and 256 KiB, concurrently (FIFO: one chunk after the other, to keep group order). For
FIFO queues (names ending in ``.fifo``) each message gets ``MessageGroupId`` = its key
(or the ``MessageGroupId`` attribute, or ``"default"``) and ``MessageDeduplicationId`` =
the ``MessageDeduplicationId`` attribute, else the SHA-256 of key and payload, so a
resend after a partial failure is deduplicated by SQS. Other attributes become String
message attributes.

Errors: entries that fail on the service's side are retried a few times; transport errors,
throttling, server errors and permission errors raise :class:`SinkUnavailable` (the caller
keeps the messages and retries: a misconfigured credential must not drop records); a
missing queue or entries SQS refuses (sender faults: too large, invalid characters) raise
:class:`SinkRejected`.
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
from eventrun.brokers import sqs as client_util
from eventrun.exceptions import SinkRejected, SinkUnavailable

__all__ = ["SqsSink", "create"]

MAX_BATCH_BYTES = 256 * 1024
RETRIES = 3
_SPECIAL = frozenset({"MessageGroupId", "MessageDeduplicationId"})

log = structlog.get_logger("eventrun.sinks.sqs")


def create(spec: SinkSpec) -> SqsSink:
    """Entry point ``eventrun.sinks: sqs``."""
    return SqsSink(spec)


def _queue_of(target: str) -> str:
    if client_util.is_queue_url(target):
        return target
    _, sep, queue = target.partition("/")
    return queue if sep else target


class SqsSink:
    """Sends OutMessages to one SQS queue (standard or FIFO)."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.queue = _queue_of(spec.target)
        if not self.queue:
            raise SinkRejected(f"{spec.url}: expected sqs:CONNECTION/QUEUE")
        self.fifo = self.queue.endswith(".fifo")
        self._queue_url = self.queue if client_util.is_queue_url(self.queue) else ""
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        try:
            ctx = client_util.open_client(self.spec.connection, queue_hint=self.queue)
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
            return SinkRejected(
                f"{self.spec.url}: SQS queue {self.queue!r} does not exist: {detail}"
            )
        if kind == "rejected":
            return SinkRejected(f"{self.spec.url}: SQS refused the messages: {detail}")
        if kind == "auth":
            return SinkUnavailable(f"{self.spec.url}: access denied, check credentials: {detail}")
        if kind == "unavailable":
            return SinkUnavailable(f"{self.spec.url}: SQS unavailable: {detail}")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))

    def _entry(self, index: int, message: OutMessage) -> dict[str, Any]:
        try:
            body = message.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SinkRejected(f"{self.spec.url}: message payload is not UTF-8 text") from exc
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": body}
        attrs = {k: v for k, v in message.attributes.items() if k not in _SPECIAL}
        if attrs:
            entry["MessageAttributes"] = {
                k: {"DataType": "String", "StringValue": str(v)} for k, v in attrs.items()
            }
        if self.fifo:
            key = message.key or ""
            entry["MessageGroupId"] = (
                message.attributes.get("MessageGroupId") or message.key or "default"
            )
            entry["MessageDeduplicationId"] = (
                message.attributes.get("MessageDeduplicationId")
                or hashlib.sha256(key.encode() + b"\0" + message.payload).hexdigest()
            )
        return entry

    def _chunks(self, entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        chunks: list[list[dict[str, Any]]] = []
        size = 0
        for entry in entries:
            entry_size = len(entry["MessageBody"].encode()) + sum(
                len(k) + len(v["StringValue"])
                for k, v in entry.get("MessageAttributes", {}).items()
            )
            if not chunks or len(chunks[-1]) == 10 or size + entry_size > MAX_BATCH_BYTES:
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
        entries = [self._entry(i, m) for i, m in enumerate(messages)]
        try:
            if not self._queue_url:
                self._queue_url = await client_util.resolve_queue_url(self._client, self.queue)
        except Exception as exc:
            raise self._translate(exc) from exc
        chunks = self._chunks(entries)
        if self.fifo:
            # In order, one chunk at a time: concurrent batches would interleave a group.
            for part in chunks:
                await self._send_chunk(part)
            return
        errors: list[Exception] = []

        async def chunk(part: list[dict[str, Any]]) -> None:
            try:
                await self._send_chunk(part)
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for part in chunks:
                tg.start_soon(chunk, part)
        if errors:
            rejected = [e for e in errors if isinstance(e, SinkRejected)]
            raise (rejected or errors)[0]

    async def _send_chunk(self, entries: list[dict[str, Any]]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                response = await self._client.send_message_batch(
                    QueueUrl=self._queue_url, Entries=entries
                )
            except Exception as exc:
                raise self._translate(exc) from exc
            failed: list[dict[str, Any]] = response.get("Failed", [])
            if not failed:
                return
            refused = [f for f in failed if f.get("SenderFault")]
            if refused:
                f = refused[0]
                raise SinkRejected(
                    f"{self.spec.url}: SQS refused {len(refused)} message(s): "
                    f"{f.get('Code', '')}: {f.get('Message', '')}"
                )
            failed_ids = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in failed_ids]
            if attempt < RETRIES:
                await anyio.sleep(0.05 * 2**attempt)
        log.warning("sqs.sink_send_failed", url=self.spec.url, entries=len(entries))
        raise SinkUnavailable(
            f"{self.spec.url}: {len(entries)} message(s) still failing after {RETRIES} retries"
        )
