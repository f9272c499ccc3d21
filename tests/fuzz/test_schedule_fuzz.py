"""Property tests of schedules (tests/sources/test_schedule.py has the fixed table).

* next-fire is strictly monotonic for every generated expression and zone;
* ``rate()`` ticks are the same instants whatever the zone;
* a cron in a fixed-offset zone fires at the same instants as the same cron in UTC with
  its hours shifted by the offset;
* in DST zones a cron fires only at the requested local wall time (first occurrence of
  an ambiguous time) and never skips a wall time that exists between two fires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from eventrun.sources.cron._schedule import parse_schedule
from tests._hypothesis import examples

DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
ALL_ZONES = ["UTC", "Asia/Kolkata", *DST_ZONES]

# Instants near DST transitions: March/April and October/November of a few years.
NEAR_TRANSITIONS = st.builds(
    lambda y, m, d, s: datetime(y, m, d, tzinfo=UTC).timestamp() + s,
    st.integers(2024, 2027),
    st.sampled_from([3, 4, 9, 10, 11]),
    st.integers(1, 28),
    st.integers(0, 86399),
)


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    """A cron field over lo..hi: ``*``, a value, a list, a range or a step."""
    value = st.integers(lo, hi)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.lists(value, min_size=2, max_size=4, unique=True).map(
            lambda v: ",".join(map(str, sorted(v)))
        ),
        st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}"),
        st.tuples(value, st.integers(1, max(1, (hi - lo) // 2))).map(lambda t: f"{t[0]}/{t[1]}"),
    )


def _expand(text: str, lo: int, hi: int) -> set[int]:
    """Reference expansion of a field produced by :func:`_field`."""
    if text == "*":
        return set(range(lo, hi + 1))
    if "/" in text:
        start, step = map(int, text.split("/"))
        return set(range(start, hi + 1, step))
    if "-" in text:
        a, b = map(int, text.split("-"))
        return set(range(a, b + 1))
    return {int(v) for v in text.split(",")}


@st.composite
def daily_crons(draw: st.DrawFn) -> tuple[str, set[int], set[int]]:
    """(expression, minutes, hours) with every day allowed, AWS or crontab syntax."""
    minutes, hours = draw(_field(0, 59)), draw(_field(0, 23))
    if draw(st.booleans()):
        expression = f"cron({minutes} {hours} * * ? *)"
    else:
        expression = f"{minutes} {hours} * * *"
    return expression, _expand(minutes, 0, 59), _expand(hours, 0, 23)


def _fires(expression: str, zone: str, start: float, n: int) -> list[int]:
    schedule = parse_schedule(expression, ZoneInfo(zone))
    out, t = [], start
    for _ in range(n):
        nxt = schedule.next_after(t)
        assert nxt is not None
        assert nxt > t, f"{expression} in {zone}: next_after({t}) = {nxt} is not later"
        out.append(nxt)
        t = nxt
    return out


@settings(max_examples=examples(300), deadline=None)
@given(daily_crons(), st.sampled_from(ALL_ZONES), NEAR_TRANSITIONS)
def test_next_fire_is_strictly_monotonic(
    cron: tuple[str, set[int], set[int]], zone: str, start: float
) -> None:
    fires = _fires(cron[0], zone, start, 20)
    assert fires == sorted(set(fires))
    assert all(isinstance(f, int) for f in fires)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.integers(1, 90),
    st.sampled_from(["second", "minute", "hour", "day"]),
    st.integers(-12, 14),
    st.floats(0, 4e9),
)
def test_rate_ticks_are_the_same_instants_in_every_zone(
    value: int, unit: str, offset_h: int, start: float
) -> None:
    expression = f"rate({value} {unit}{'s' if value != 1 else ''})"
    # Etc/GMT-5 is UTC+5 (POSIX sign convention).
    fixed = "UTC" if offset_h == 0 else f"Etc/GMT{-offset_h:+d}"
    utc = _fires(expression, "UTC", start, 5)
    assert _fires(expression, fixed, start, 5) == utc
    assert _fires(expression, "Europe/Berlin", start, 5) == utc


@settings(max_examples=examples(200), deadline=None)
@given(daily_crons(), st.integers(-12, 14).filter(bool), NEAR_TRANSITIONS)
def test_cron_in_a_fixed_offset_zone_is_utc_shifted(
    cron: tuple[str, set[int], set[int]], offset_h: int, start: float
) -> None:
    _, minutes, hours = cron
    shifted = sorted((h - offset_h) % 24 for h in hours)
    minute_list = ",".join(map(str, sorted(minutes)))
    local = f"cron({minute_list} {','.join(map(str, sorted(hours)))} * * ? *)"
    in_utc = f"cron({minute_list} {','.join(map(str, shifted))} * * ? *)"
    assert _fires(local, f"Etc/GMT{-offset_h:+d}", start, 10) == _fires(in_utc, "UTC", start, 10)


@settings(max_examples=examples(120), deadline=None)
@given(daily_crons(), st.sampled_from(DST_ZONES), NEAR_TRANSITIONS)
def test_dst_fires_at_the_wall_time_or_skips(
    cron: tuple[str, set[int], set[int]], zone: str, start: float
) -> None:
    expression, minutes, hours = cron
    tz = ZoneInfo(zone)
    fires = _fires(expression, zone, start, 4)
    for fire in fires:
        wall = datetime.fromtimestamp(fire, tz)
        assert (wall.hour, wall.minute, wall.second) in {(h, m, 0) for h in hours for m in minutes}
        assert wall.fold == 0, f"{expression} fired at the repeat of {wall} in {zone}"
    # No existing wall time matching the fields was skipped between two fires (every
    # zone here has whole-minute offsets, so local minutes start on UTC minutes).
    edges = [int(start) // 60 * 60, *fires]
    for a, b in pairwise(edges):
        for m in range(a + 60 - a % 60, b, 60):
            if m <= start:
                continue
            wall = datetime.fromtimestamp(m, tz)
            assert not (wall.fold == 0 and wall.hour in hours and wall.minute in minutes), (
                f"{expression} in {zone} skipped {wall.isoformat()} (between {a} and {b})"
            )
