"""eventrun.dispatch._filters: how a record's payload is decoded for filter patterns."""

from __future__ import annotations

import pytest

from eventrun.dispatch._filters import FilterError, RecordFilter, decode_data

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


def test_cidr_matches_addresses_in_the_network() -> None:
    """cidr was accepted at load time but matched nothing: every record was dropped."""
    v4 = RecordFilter([{"ip": [{"cidr": "10.0.0.0/24"}]}])
    assert v4.matches({"ip": "10.0.0.7"})
    assert not v4.matches({"ip": "10.0.1.7"})
    assert not v4.matches({"ip": "not an address"})
    assert not v4.matches({"ip": 10})
    v6 = RecordFilter([{"ip": [{"cidr": "2001:db8::/32"}]}])
    assert v6.matches({"ip": "2001:db8::1"})
    assert not v6.matches({"ip": "10.0.0.7"})
    with pytest.raises(FilterError, match=r"pattern\.ip\.cidr: must be a network"):
        RecordFilter([{"ip": [{"cidr": "10.0.0.0/33"}]}])


def test_wildcard_star_only() -> None:
    """Only ``*`` is special (EventBridge); ``?`` and ``[`` are literal characters."""
    f = RecordFilter([{"k": [{"wildcard": "logs/*/a?[1].txt"}]}])
    assert f.matches({"k": "logs/2024/x\ny/a?[1].txt"})
    assert not f.matches({"k": "logs/2024/ab1.txt"})
    assert not f.matches({"k": "logs/2024/aX1.txt"})


def test_string_matchers_with_equals_ignore_case_and_anything_but_variants() -> None:
    prefix_ci = RecordFilter([{"k": [{"prefix": {"equals-ignore-case": "ORD-"}}]}])
    assert prefix_ci.matches({"k": "ord-1"})
    assert not prefix_ci.matches({"k": "inv-1"})
    not_prefix = RecordFilter([{"k": [{"anything-but": {"prefix": ["a", "b"]}}]}])
    assert not_prefix.matches({"k": "cat"})
    assert not not_prefix.matches({"k": "bat"})
    assert not_prefix.matches({"k": 1})  # a number has no prefix to exclude
    not_one = RecordFilter([{"k": [{"anything-but": {"suffix": ".tmp"}}]}])
    assert not_one.matches({"k": "a.txt"})
    assert not not_one.matches({"k": "a.tmp"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"$or": [{"a": [1]}]}, "pattern.$or: must be a list of at least 2 patterns"),
        ({"a": [{"numeric": [">", 1, "<"]}]}, "pattern.a.numeric: must be [op, number, ...]"),
        ({"a": [{"numeric": ["~", 1]}]}, "pattern.a.numeric: bad comparison ['~', 1]"),
        ({"a": [{"numeric": [">", True]}]}, "pattern.a.numeric: bad comparison ['>', True]"),
        ({"a": [{"exists": "yes"}]}, "pattern.a.exists: must be true or false, got 'yes'"),
        ({"a": [{"cidr": 10}]}, "pattern.a.cidr: must be a network like 10.0.0.0/24, got 10"),
        ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "pattern.a.anything-but: must be"),
        ({"a": [{"anything-but": {"prefix": "x", "suffix": "y"}}]}, "pattern.a.anything-but:"),
    ],
)
def test_invalid_patterns_are_refused_at_load(pattern: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError) as info:
        RecordFilter([pattern])
    assert str(info.value).startswith(message)
