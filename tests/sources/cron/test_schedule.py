"""Schedule expressions: known next-fire times, DST rules, and error messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventrun.sources.cron._schedule import (
    ScheduleError,
    parse_schedule,
    recent_ticks,
    resolve_timezone,
)

END = "END"  # the schedule has no further tick

NY = "America/New_York"
BERLIN = "Europe/Berlin"

# (expression, time zone, start, the next fire times in order). 2024-01-01 is a Monday.
NEXT_FIRES: list[tuple[str, str, str, list[str]]] = [
    # rate(): multiples of the period since the epoch, whatever the zone
    ("rate(5 minutes)", "UTC", "2024-01-01T00:00:00Z", ["00:05", "00:10"]),
    ("rate(1 minute)", "UTC", "2024-01-01T00:00:30Z", ["00:01", "00:02"]),
    ("rate(1 hour)", "UTC", "2024-01-01T10:20:00Z", ["11:00", "12:00"]),
    ("rate(2 days)", "UTC", "2024-01-01T00:00:00Z", ["2024-01-02T00:00Z", "2024-01-04T00:00Z"]),
    ("rate(10 seconds)", "UTC", "2024-01-01T00:00:05Z", ["00:00:10", "00:00:20"]),
    ("RATE(1 Second)", "UTC", "2024-01-01T00:00:00Z", ["00:00:01", "00:00:02"]),
    ("rate(1 hour)", NY, "2024-11-03T04:30:00Z", ["05:00", "06:00", "07:00"]),
    # AWS cron(): the examples of the EventBridge documentation
    ("cron(15 10 * * ? *)", "UTC", "2024-01-01T00:00:00Z", ["01T10:15", "02T10:15"]),
    ("cron(0 18 ? * MON-FRI *)", "UTC", "2024-01-05T19:00:00Z", ["08T18:00", "09T18:00"]),
    (
        "cron(0 8 1 * ? *)",
        "UTC",
        "2024-01-01T09:00:00Z",
        ["2024-02-01T08:00Z", "2024-03-01T08:00Z"],
    ),
    ("cron(0/10 * ? * MON-FRI *)", "UTC", "2024-01-05T23:55:00Z", ["08T00:00", "08T00:10"]),
    ("cron(0/5 8-17 ? * MON-FRI *)", "UTC", "2024-01-01T17:56:00Z", ["02T08:00", "02T08:05"]),
    (
        "cron(0 9 ? * 2#1 *)",
        "UTC",
        "2024-01-02T00:00:00Z",
        ["2024-02-05T09:00Z", "2024-03-04T09:00Z"],
    ),
    # AWS day-of-week is 1-7 = SUN-SAT (2 = Monday), crontab's 0-6 (2 = Tuesday)
    ("cron(0 0 ? * 2 *)", "UTC", "2024-01-01T00:00:00Z", ["08T00:00", "15T00:00"]),
    ("0 0 * * 2", "UTC", "2024-01-01T00:00:00Z", ["02T00:00", "09T00:00"]),
    (
        "cron(0 0 ? * SUN-SAT/2 *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["02T00:00", "04T00:00", "06T00:00", "07T00:00"],
    ),
    # L, LW, nW, nL, L in day-of-week
    (
        "cron(0 0 L * ? *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-31T00:00Z", "2024-02-29T00:00Z", "2024-03-31T00:00Z"],
    ),
    (
        "cron(0 0 LW * ? *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-31T00:00Z", "2024-02-29T00:00Z", "2024-03-29T00:00Z"],
    ),
    (
        "cron(0 12 15W * ? *)",
        "UTC",
        "2024-06-01T00:00:00Z",
        ["2024-06-14T12:00Z", "2024-07-15T12:00Z", "2024-08-15T12:00Z", "2024-09-16T12:00Z"],
    ),
    # nW past the month's end (30W in a 29-day February): no tick that month
    (
        "cron(0 12 30W * ? *)",
        "UTC",
        "2024-01-31T00:00:00Z",
        ["2024-03-29T12:00Z", "2024-04-30T12:00Z"],
    ),
    (
        "cron(0 0 1W * ? *)",
        "UTC",
        "2024-05-31T12:00:00Z",
        ["2024-06-03T00:00Z", "2024-07-01T00:00Z", "2024-08-01T00:00Z"],
    ),
    (
        "cron(0 10 ? * 6L *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-01-26T10:00Z", "2024-02-23T10:00Z", "2024-03-29T10:00Z"],
    ),
    ("cron(0 10 ? * L *)", "UTC", "2024-01-01T00:00:00Z", ["06T10:00", "13T10:00"]),
    # names, lists, year field
    (
        "cron(0 0 1 JAN,jul ? *)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2024-07-01T00:00Z", "2025-01-01T00:00Z"],
    ),
    (
        "cron(0 0 1 1 ? 2026-2027)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2026-01-01T00:00Z", "2027-01-01T00:00Z", END],
    ),
    (
        "cron(0 0 ? * 1 2030/2)",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["2030-01-06T00:00Z", "2030-01-13T00:00Z"],
    ),
    (
        "cron(0 0 29 2 ? *)",
        "UTC",
        "2024-03-01T00:00:00Z",
        ["2028-02-29T00:00Z", "2032-02-29T00:00Z"],
    ),
    # classic 5-field crontab
    ("*/15 * * * *", "UTC", "2024-01-01T00:07:00Z", ["00:15", "00:30"]),
    ("0 0 * * 7", "UTC", "2024-01-01T00:00:00Z", ["07T00:00", "14T00:00"]),
    (
        "0 0 13 * FRI",
        "UTC",
        "2024-01-01T00:00:00Z",
        ["05T00:00", "12T00:00", "13T00:00", "19T00:00"],
    ),
    ("0 0 */2 * MON", "UTC", "2024-01-01T00:00:00Z", ["15T00:00", "29T00:00", "2024-02-05T00:00Z"]),
    ("0 9 * * 1#2", "UTC", "2024-01-01T00:00:00Z", ["2024-01-08T09:00Z", "2024-02-12T09:00Z"]),
    ("0 0 L * *", "UTC", "2024-01-01T00:00:00Z", ["31T00:00"]),
    ("@hourly", "UTC", "2024-01-01T00:30:00Z", ["01:00", "02:00"]),
    ("@weekly", "UTC", "2024-01-01T00:00:00Z", ["07T00:00"]),
    # 6-field crontab: seconds first
    ("*/20 * * * * *", "UTC", "2024-01-01T00:00:00Z", ["00:00:20", "00:00:40", "00:01:00"]),
    ("30 0 9 * * MON-FRI", "UTC", "2024-01-05T10:00:00Z", ["08T09:00:30"]),
    # at(): one tick, local time
    ("at(2024-06-01T12:00:00)", "UTC", "2024-01-01T00:00:00Z", ["2024-06-01T12:00Z", END]),
    ("at(2024-06-01T12:00:00)", BERLIN, "2024-01-01T00:00:00Z", ["2024-06-01T10:00Z", END]),
    ("at(2024-01-01T00:00:00)", "UTC", "2024-01-01T00:00:00Z", [END]),
    # DST, America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT, 2024-11-03 02:00 EDT -> 01:00 EST
    (
        "cron(30 2 * * ? *)",
        NY,
        "2024-03-08T12:00:00Z",
        ["2024-03-09T02:30-05:00", "2024-03-11T02:30-04:00"],
    ),
    (
        "cron(30 1 * * ? *)",
        NY,
        "2024-11-02T12:00:00Z",
        ["2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"],
    ),
    (
        "cron(0 * * * ? *)",
        NY,
        "2024-03-10T05:30:00Z",
        ["2024-03-10T01:00-05:00", "2024-03-10T03:00-04:00", "2024-03-10T04:00-04:00"],
    ),
    (
        "cron(0 * * * ? *)",
        NY,
        "2024-11-03T04:30:00Z",
        ["2024-11-03T01:00-04:00", "2024-11-03T02:00-05:00", "2024-11-03T03:00-05:00"],
    ),
    (
        "cron(0 9 * * ? *)",
        NY,
        "2024-03-09T15:00:00Z",
        ["2024-03-10T09:00-04:00", "2024-03-11T09:00-04:00"],
    ),
    # DST, Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST, 2024-10-27 03:00 CEST -> 02:00 CET
    (
        "cron(30 2 * * ? *)",
        BERLIN,
        "2024-03-30T12:00:00Z",
        ["2024-04-01T02:30+02:00", "2024-04-02T02:30+02:00"],
    ),
    (
        "cron(30 2 * * ? *)",
        BERLIN,
        "2024-10-26T12:00:00Z",
        ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"],
    ),
    (
        "*/30 2 * * *",
        BERLIN,
        "2024-10-26T23:00:00Z",
        ["2024-10-27T02:00+02:00", "2024-10-27T02:30+02:00", "2024-10-28T02:00+01:00"],
    ),
    ("0 0 2 * * *", BERLIN, "2024-03-30T12:00:00Z", ["2024-04-01T02:00+02:00"]),
    ("at(2024-03-31T02:30:00)", BERLIN, "2024-01-01T00:00:00Z", ["2024-03-31T03:30+02:00", END]),
]


def _expand(short: str, start: datetime) -> datetime:
    """``00:05`` / ``00:00:10`` / ``08T18:00``: that time on the start's day (or that day of
    its month), UTC; anything longer is a full ISO time."""
    if len(short) <= 8 and "T" not in short:
        parts = [int(p) for p in short.split(":")] + [0]
        return start.replace(hour=parts[0], minute=parts[1], second=parts[2])
    if len(short) <= 11:
        day, clock = short.split("T")
        h, m, *s = (int(p) for p in clock.split(":"))
        return start.replace(day=int(day), hour=h, minute=m, second=s[0] if s else 0)
    return datetime.fromisoformat(short.replace("Z", "+00:00"))


@pytest.mark.parametrize(("expression", "zone", "start", "expected"), NEXT_FIRES)
def test_next_fire_times(expression: str, zone: str, start: str, expected: list[str]) -> None:
    schedule = parse_schedule(expression, resolve_timezone(zone))
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    got: list[str] = []
    t: float | None = t0.timestamp()
    for _ in expected:
        t = schedule.next_after(t) if t is not None else None
        got.append(END if t is None else datetime.fromtimestamp(t, UTC).isoformat())
    want = [w if w == END else _expand(w, t0).astimezone(UTC).isoformat() for w in expected]
    assert got == want


def test_table_is_big_enough() -> None:
    assert len(NEXT_FIRES) >= 30


def test_next_after_is_strict_and_ticks_are_whole_seconds() -> None:
    schedule = parse_schedule("*/2 * * * * *", resolve_timezone("UTC"))
    assert schedule.next_after(100.0) == 102
    assert schedule.next_after(101.5) == 102
    assert schedule.next_after(102.0) == 104


def test_periods_size_claim_ttls() -> None:
    utc = resolve_timezone("UTC")
    assert parse_schedule("rate(5 minutes)", utc).period_s == 300
    assert parse_schedule("cron(0 9 * * ? *)", utc).period_s == 86400
    assert parse_schedule("*/10 * * * * *", utc).period_s == 10
    assert parse_schedule("at(2030-01-01T00:00:00)", utc).period_s == 60


def test_recent_ticks_keeps_the_latest_n() -> None:
    schedule = parse_schedule("rate(1 minute)", resolve_timezone("UTC"))
    assert recent_ticks(schedule, 0, 600, 3) == [480, 540, 600]
    assert recent_ticks(schedule, 500, 600, 3) == [540, 600]
    assert recent_ticks(schedule, 0, 600, 0) == []
    # a long downtime of a per-second schedule: the window search stays small
    fast = parse_schedule("* * * * * *", resolve_timezone("UTC"))
    assert recent_ticks(fast, 0, 30 * 86400, 2) == [30 * 86400 - 1, 30 * 86400]
    daily = parse_schedule("cron(0 0 ? * MON *)", resolve_timezone("UTC"))
    monday = int(datetime.fromisoformat("2024-01-08T00:00:00+00:00").timestamp())
    assert recent_ticks(daily, 0, monday + 3600, 2) == [monday - 7 * 86400, monday]
    # ticks close together, then a long gap: the search window grows until it has them
    twice = parse_schedule("cron(0 0 1,2 * ? *)", resolve_timezone("UTC"))
    mid_january = int(datetime.fromisoformat("2024-01-20T00:00:00+00:00").timestamp())
    jan_1 = int(datetime.fromisoformat("2024-01-01T00:00:00+00:00").timestamp())
    assert twice.period_s == 86400
    assert recent_ticks(twice, 0, mid_january, 2) == [jan_1, jan_1 + 86400]


INVALID: list[tuple[str, str]] = [
    ("rate(0 minutes)", "VALUE a positive integer"),
    ("rate(five minutes)", "VALUE a positive integer"),
    ("rate(1 minutes)", "use the singular unit 'minute' when the value is 1"),
    ("rate(5 minute)", "use the plural unit 'minutes' when the value is not 1"),
    ("rate(5 weeks)", "unit must be second(s), minute(s), hour(s) or day(s), got 'weeks'"),
    ("rate(5 minutes", "unbalanced parentheses"),
    ("cron(0 0 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
    ("cron(0 0 ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
    ("cron(0 0 * * ?)", "AWS cron needs 6 fields"),
    ("cron(60 0 * * ? *)", "minutes: 60 is out of range 0-59"),
    ("cron(0 24 * * ? *)", "hours: 24 is out of range 0-23"),
    ("cron(0 0 32 * ? *)", "day-of-month: 32 is out of range 1-31"),
    ("cron(0 0 ? * 0 *)", "day-of-week: 0 is out of range 1-7"),
    ("cron(0 0 ? * 3#1,6#3 *)", "day-of-week: L, nL and n#k must stand alone"),
    ("cron(0 0 ? * 3#6 *)", "the k in n#k must be 1-5"),
    ("cron(0 0 1 FOO ? *)", "month: expected a number or a name like JAN, got 'FOO'"),
    ("cron(0 0 1 * ? 2300)", "year: 2300 is out of range 1970-2199"),
    ("cron(0 0 10-5 * ? *)", "day-of-month: the range '10-5' runs backwards"),
    ("cron(*/0 0 1 * ? *)", "minutes: the step in '*/0' must be a positive integer"),
    ("cron(0 ? 1 * ? *)", "hours: '?' is allowed only in day-of-month or day-of-week"),
    ("cron(0 0 30 2 ? *)", "never fires"),
    ("cron(0 0 1,LW * ? *)", "day-of-month: L, LW and nW must stand alone"),
    ("at(2024-13-01T00:00:00)", "expected at(yyyy-mm-ddThh:mm:ss)"),
    ("at(tomorrow)", "expected at(yyyy-mm-ddThh:mm:ss)"),
    ("* * * *", "got 4 fields"),
    ("", "got 0 fields"),
    ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
]


@pytest.mark.parametrize(("expression", "message"), INVALID)
def test_invalid_expressions_name_the_problem(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expression, resolve_timezone("UTC"))
    assert message in str(info.value)
    assert expression.strip() in str(info.value)


def test_unknown_time_zone() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        resolve_timezone("Mars/Olympus")
