"""eventrun.common._text.one_line: user text inside a message never breaks the line."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eventrun.common._text import one_line

# every character str.splitlines() breaks on, plus the other controls a terminal acts on
BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.mark.parametrize("char", [*BREAKS, "\x00", "\x1b", "\x7f", "\x9f", "\t"])
def test_each_break_and_control_is_escaped(char: str) -> None:
    out = one_line(f"a{char}b")
    assert char not in out
    assert out.splitlines() == [out]
    # JSON-style escapes: the same text comes back through a JSON string
    assert json.loads(f'"{out}"') == f"a{char}b"


def test_plain_and_printable_unicode_text_is_unchanged() -> None:
    text = "functions.f.handler: got 'café → 東京' ${X}"
    assert one_line(text) == text
    assert one_line("") == ""


@given(st.text())
@example(" \x85")
@example("bad\u2028key\r\n")
def test_any_text_is_one_line_and_escaping_is_idempotent(text: str) -> None:
    out = one_line(text)
    assert len(out.splitlines()) <= 1
    assert one_line(out) == out


@given(st.text())
def test_escaped_json_string_round_trips(text: str) -> None:
    """Applied to JSON text (how the log renderer uses it), the JSON still decodes to
    the original value."""
    encoded = json.dumps({"v": text}, ensure_ascii=False)
    assert json.loads(one_line(encoded)) == {"v": text}
