"""Batched settle calls for the SQS poller: DeleteMessageBatch, ChangeMessageVisibilityBatch.

Records are split into chunks of 10 (the API limit) sent concurrently. Entries the
service reports as ``Failed`` are retried (a few times, short backoff) unless the failure
is the sender's fault; sender faults (``ReceiptHandleIsInvalid``, ``MessageNotInflight``:
the message was already deleted or its visibility already expired) are logged and
dropped, since retrying cannot change them. A transport error raises the translated
source error (``SourceUnavailable``...) after every chunk has been tried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog

from eventrun.abc import Record
from eventrun.exceptions import SourceUnavailable

__all__ = ["BatchCaller"]

RETRIES = 3
log = structlog.get_logger("eventrun.sources.sqs")

Entry = dict[str, Any]
Call = Callable[[list[Entry]], Awaitable[dict[str, Any]]]


class BatchCaller:
    """Runs the SQS batch settle APIs for one queue on one client."""

    def __init__(
        self,
        client: Any,
        queue_url: str,
        translate: Callable[[BaseException, str], Exception],
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._translate = translate

    async def delete(self, records: Sequence[Record]) -> None:
        """DeleteMessageBatch every record's receipt handle."""

        async def call(entries: list[Entry]) -> dict[str, Any]:
            result: dict[str, Any] = await self._client.delete_message_batch(
                QueueUrl=self._queue_url, Entries=entries
            )
            return result

        await self._run("DeleteMessageBatch", records, {}, call)

    async def change_visibility(self, records: Sequence[Record], timeout_s: int, why: str) -> None:
        """ChangeMessageVisibilityBatch every record to ``timeout_s`` from now."""

        async def call(entries: list[Entry]) -> dict[str, Any]:
            result: dict[str, Any] = await self._client.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=entries
            )
            return result

        await self._run(
            f"ChangeMessageVisibilityBatch ({why})",
            records,
            {"VisibilityTimeout": timeout_s},
            call,
        )

    async def _run(self, action: str, records: Sequence[Record], extra: Entry, call: Call) -> None:
        errors: list[BaseException] = []

        async def chunk(part: Sequence[Record]) -> None:
            entries = [
                {"Id": str(i), "ReceiptHandle": r.token, **extra} for i, r in enumerate(part)
            ]
            try:
                await self._chunk(action, entries, call)
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for start in range(0, len(records), 10):
                tg.start_soon(chunk, records[start : start + 10])
        if errors:
            raise self._translate(errors[0], action) from errors[0]

    async def _chunk(self, action: str, entries: list[Entry], call: Call) -> None:
        for attempt in range(RETRIES + 1):
            response = await call(entries)
            failed: list[dict[str, Any]] = response.get("Failed", [])
            if not failed:
                return
            by_id = {e["Id"]: e for e in entries}
            retry = [by_id[f["Id"]] for f in failed if not f.get("SenderFault")]
            for f in failed:
                if f.get("SenderFault"):
                    log.warning(
                        "sqs.settle_entry_rejected",
                        action=action,
                        queue=self._queue_url,
                        code=f.get("Code", ""),
                        message=f.get("Message", ""),
                    )
            if not retry:
                return
            entries = retry
            if attempt < RETRIES:
                await anyio.sleep(0.05 * 2**attempt)
        log.error(
            "sqs.settle_failed",
            action=action,
            queue=self._queue_url,
            entries=len(entries),
        )
        raise SourceUnavailable(
            f"SQS {action} on {self._queue_url}: {len(entries)} entries still failing after retries"
        )
