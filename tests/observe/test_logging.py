"""eventrun.observe._logging: the JSON renderer writes exactly one line per event."""

from __future__ import annotations

import json

import pytest

from eventrun.observe._logging import json_renderer


@pytest.mark.parametrize("value", ["a\nb", "a\x85b", "a\u2028b", "a\u2029b", "a\x7fb", "ok"])
def test_json_line_never_splits_and_keeps_the_value(value: str) -> None:
    line = json_renderer()(None, "info", {"event": "config.key", "key": value})
    assert isinstance(line, str)
    assert line.splitlines() == [line]
    assert json.loads(line) == {"event": "config.key", "key": value}


def test_an_unknown_level_is_refused_before_anything_is_configured() -> None:
    from eventrun.observe._logging import configure_logging

    with pytest.raises(ValueError, match=r"^unknown log level 'loud'; expected debug, info"):
        configure_logging("loud")
