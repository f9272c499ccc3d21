"""Pipeline outputs: which parts of a handler's return value go to ``on_success``.

A trigger's ``on_success`` publishes what the handler returned, keyed like its input, before
the input is acknowledged. The contract, per invocation (``records`` = the invoked batch):

* ``null`` (Python ``None``): nothing is published.
* ``{"batchItemFailures": [...]}`` without ``"records"``: a partial-failure report, not an
  output; nothing is published.
* ``{"records": [...]}`` **aligned with the batch** (one item per input record, in batch
  order; ``null`` = no output for that input): item *i* is keyed like input *i* and is
  published only if input *i* succeeded (is being acknowledged now).
* ``{"records": [...], "batchItemFailures": [...]}`` **aligned with the succeeded inputs**
  (one item per input *not* listed as failed, in batch order): the same, matched in order.
* ``{"records": [...]}`` of any other length (a filtering or fan-out handler): the items
  cannot be attributed to inputs; all of them are published once some input of the batch
  succeeds, keyed like the last succeeded input. Use an aligned list (``null`` for inputs
  without output) when the batch can hold several keys or can partially fail.
* anything else (a non-null value): one output for the invocation, keyed like the last
  succeeded input.

"Succeeded" follows the dispatcher: for streams with ``report_batch_item_failures`` only
the inputs *before* the first failed one are acknowledged (the rest are retried, so their
outputs come from the retry); for queues every input not listed as failed (and not in a
failed FIFO group). Outputs of failed inputs are never published.

Keys: a record's ``key`` (Kafka key, Redis ``key_field`` value); for unordered sources
without a key, the record's ``shard`` (the SQS FIFO ``MessageGroupId``); otherwise none.
The ``redis:`` sink writes the key as the entry's ``key`` field (read it back with
``key_field: key``), the ``kafka:`` sink as the record key, the ``sqs:`` sink as the FIFO
``MessageGroupId``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from eventrun.abc import OutMessage, Record

__all__ = ["output_key", "pipeline_outputs"]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def output_key(record: Record, *, ordered: bool) -> str | None:
    """The key an output of ``record`` is published with (see the module docstring)."""
    if record.key is not None:
        return record.key
    if not ordered and record.shard:
        return record.shard
    return None


def pipeline_outputs(
    payload: bytes,
    keys: Sequence[str | None],
    keep: Sequence[int],
    failed: Sequence[int] = (),
) -> list[OutMessage]:
    """The messages to publish for the inputs at ``keep`` of an invoked batch.

    ``payload`` is the handler's JSON return value, ``keys[i]`` the output key of input
    *i*, ``keep`` the (sorted) indexes being acknowledged now, ``failed`` the indexes the
    handler reported in ``batchItemFailures``. A payload that is not JSON yields nothing.
    """
    if not keep:
        return []
    try:
        value: Any = _DECODER.decode(payload)
    except msgspec.DecodeError:
        return []
    if value is None:
        return []
    last = keep[-1]
    if not isinstance(value, dict) or "records" not in value:
        if isinstance(value, dict) and "batchItemFailures" in value:
            return []
        return [OutMessage(payload=_ENCODER.encode(value), key=keys[last])]
    items = value["records"]
    if not isinstance(items, list):
        items = [items]
    n = len(keys)
    failed_set = set(failed)
    pairs: list[tuple[int, Any]]
    if len(items) == n:
        pairs = [(i, items[i]) for i in keep]
    elif failed_set and len(items) == n - len(failed_set):
        kept = set(keep)
        succeeded = [i for i in range(n) if i not in failed_set]
        pairs = [(i, item) for i, item in zip(succeeded, items, strict=True) if i in kept]
    else:
        pairs = [(last, item) for item in items]
    return [
        OutMessage(payload=_ENCODER.encode(item), key=keys[i])
        for i, item in pairs
        if item is not None
    ]
