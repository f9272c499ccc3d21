"""eventrun.dispatch._outputs: which parts of a handler's return value are published, and
their keys."""

from __future__ import annotations

import json

from eventrun.abc import Record
from eventrun.dispatch._outputs import output_key, pipeline_outputs


def _record(shard: str, key: str | None = None) -> Record:
    return Record(
        shard=shard, item_id="1", event={}, data=b"", data_key="body", timestamp=0.0, key=key
    )


def test_output_key_is_the_key_else_the_unordered_shard_else_none() -> None:
    assert output_key(_record("t-0", key="k"), ordered=True) == "k"
    assert output_key(_record("group-a"), ordered=False) == "group-a"  # SQS FIFO group
    assert output_key(_record("t-0"), ordered=True) is None  # a partition is not a key
    assert output_key(_record(""), ordered=False) is None  # SQS standard: no group


def test_a_records_value_that_is_not_a_list_is_one_item() -> None:
    """``{"records": {...}}`` publishes that one object, keyed like the last acknowledged
    input (a batch of one: aligned with its input)."""
    out = pipeline_outputs(b'{"records": {"n": 1}}', ["k0"], [0])
    assert [(json.loads(m.payload), m.key) for m in out] == [({"n": 1}, "k0")]
    two = pipeline_outputs(b'{"records": {"n": 1}}', ["k0", "k1"], [0, 1])
    assert [(json.loads(m.payload), m.key) for m in two] == [({"n": 1}, "k1")]
