"""eventrun._filters: how a record's payload is decoded for filter patterns."""

from __future__ import annotations

from eventrun._filters import RecordFilter, decode_data

DEEP = b"[" * 200_000 + b"]" * 200_000


def test_payload_decodes_as_json_else_text_else_none() -> None:
    assert decode_data(b'{"a": [1]}') == {"a": [1]}
    assert decode_data(b"plain text") == "plain text"
    assert decode_data(b"\xff\xfe") is None


def test_json_nested_past_the_recursion_limit_is_text_not_an_error() -> None:
    """A broker record of 200,000 nested lists used to raise RecursionError out of the
    filter (the dispatcher's intake); it is filtered as the text it is."""
    assert decode_data(DEEP) == DEEP.decode()
    event = {"eventSource": "aws:kafka", "value": ""}
    as_text = RecordFilter([{"value": [{"prefix": "[[["}]}])
    as_object = RecordFilter([{"value": {"a": [1]}}])
    assert as_text.matches_record(event, "value", DEEP)
    assert not as_object.matches_record(event, "value", DEEP)
