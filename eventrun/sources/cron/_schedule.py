"""Schedule expressions: parsing and next-fire computation for the cron source.

Accepted expressions (case-insensitive)::

    rate(5 minutes)             AWS rate: minute(s) | hour(s) | day(s); singular only for 1
    rate(10 seconds)            eventrun extension: second(s)
    cron(0 9 ? * MON-FRI *)     AWS cron: min hour day-of-month month day-of-week year
    at(2030-01-01T09:00:00)     AWS one-time schedule, local time in the trigger's zone
    */5 * * * *                 classic crontab: min hour dom month dow (dow 0-7, 0/7 = SUN)
    */10 * * * * *              crontab with seconds FIRST: sec min hour dom month dow
    @hourly @daily @midnight @weekly @monthly @yearly @annually

AWS cron follows the EventBridge rules: day-of-week 1-7 = SUN-SAT; exactly one of
day-of-month / day-of-week is ``?``; ``L`` (last day), ``LW`` (last weekday), ``nW``
(weekday nearest day n, within the month) in day-of-month; ``L`` (Saturday), ``nL`` (last
weekday n of the month), ``n#k`` (k-th weekday n) in day-of-week; years 1970-2199. Special
terms stand alone in their field. Crontab expressions take the same specials with crontab
day numbers; when both day fields are restricted (neither starts with ``*``) a day matches
either one (Vixie cron's OR rule), otherwise both.

Time semantics (EventBridge Scheduler's, for every wall-clock expression): ``cron``/crontab
and ``at`` are evaluated in the trigger's IANA zone; a local time that does not exist
(spring forward) is skipped, a local time that occurs twice (fall back) fires once, at its
first occurrence. ``at`` at a nonexistent local time fires at the shifted time instead of
never. ``rate`` ticks are multiples of the period since 1970-01-01T00:00:00Z, whatever the
zone, so every replica computes the same ticks. Ticks are whole epoch seconds.

croniter (fires nonexistent times at the shifted time, repeats ambiguous ones) and cronsim
(no year field, no ``nW``, crontab numbering) were evaluated and do not match these rules,
hence this compact evaluator.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventrun.sources.cron._fields import MAX_YEAR, CronFields, parse_fields

__all__ = [
    "AtSchedule",
    "CronSchedule",
    "RateSchedule",
    "Schedule",
    "ScheduleError",
    "parse_schedule",
    "recent_ticks",
    "resolve_timezone",
]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_WRAPPED = re.compile(r"(rate|cron|at)\((.*)\)", re.IGNORECASE | re.DOTALL)


class ScheduleError(ValueError):
    """An invalid expression; the message names the expression and the problem."""


class Schedule(Protocol):
    """A set of fire times (whole epoch seconds)."""

    expression: str
    period_s: float
    """Typical gap between ticks (60 for one-time schedules); sizes claim TTLs."""

    def next_after(self, t: float) -> int | None:
        """The first tick strictly after ``t``, or None when there is none."""
        ...


class RateSchedule:
    """``rate(N unit)``: every ``period_s`` seconds, aligned to the Unix epoch."""

    __slots__ = ("_period", "expression", "period_s")

    def __init__(self, expression: str, period_s: int) -> None:
        self.expression = expression
        self.period_s = float(period_s)
        self._period = period_s

    def next_after(self, t: float) -> int:
        return (math.floor(t) // self._period + 1) * self._period


class AtSchedule:
    """``at(...)``: one tick."""

    __slots__ = ("at", "expression", "period_s")

    def __init__(self, expression: str, at: int) -> None:
        self.expression = expression
        self.at = at
        self.period_s = 60.0

    def next_after(self, t: float) -> int | None:
        return self.at if self.at > t else None


class CronSchedule:
    """A cron expression evaluated in a time zone (see the module docstring for DST)."""

    __slots__ = ("expression", "fields", "period_s", "tz")

    def __init__(self, expression: str, fields: CronFields, tz: ZoneInfo) -> None:
        self.expression = expression
        self.fields = fields
        self.tz = tz
        first = self.next_after(-1)
        if first is None:
            raise ScheduleError(f"{expression}: never fires (no matching date in 1970-2199)")
        second = self.next_after(first)
        self.period_s = float(second - first) if second is not None else 60.0

    def next_after(self, t: float) -> int | None:
        after = math.floor(t)
        wall = datetime.fromtimestamp(after, self.tz).replace(tzinfo=None)
        day = wall.date()
        start = (wall.hour, wall.minute, wall.second)
        while day.year <= MAX_YEAR:
            later = self.fields.skip_to(day)
            if later is not None:
                day, start = later, (0, 0, 0)
                continue
            if self.fields.day_matches(day):
                for h, m, s in self.fields.times_from(start):
                    ts = self._epoch(datetime(day.year, day.month, day.day, h, m, s))
                    if ts is not None and ts > after:
                        return ts
            day += timedelta(days=1)
            start = (0, 0, 0)
        return None

    def _epoch(self, naive: datetime) -> int | None:
        """Epoch seconds of a local time (first occurrence), None if it does not exist."""
        ts = int(naive.replace(tzinfo=self.tz).timestamp())
        if datetime.fromtimestamp(ts, self.tz).replace(tzinfo=None) != naive:
            return None
        return ts


def resolve_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raise ScheduleError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r}: expected an IANA name like 'Europe/Berlin'"
        ) from exc


def parse_schedule(expression: str, tz: ZoneInfo) -> Schedule:
    """Parse ``expression`` (see the module docstring); raise ScheduleError when invalid."""
    text = expression.strip()
    wrapped = _WRAPPED.fullmatch(text)
    if wrapped is not None:
        kind, body = wrapped[1].lower(), wrapped[2].strip()
        if kind == "rate":
            return _parse_rate(text, body)
        if kind == "at":
            return _parse_at(text, body, tz)
        return CronSchedule(text, _fields(text, body.split(), aws=True), tz)
    if text.startswith(("rate", "cron", "at(")):
        raise ScheduleError(f"{text}: unbalanced parentheses, expected e.g. 'rate(5 minutes)'")
    if text.lower() in _MACROS:
        return CronSchedule(text, _fields(text, _MACROS[text.lower()].split(), aws=False), tz)
    parts = text.split()
    if len(parts) not in (5, 6):
        raise ScheduleError(
            f"{text!r}: expected rate(...), cron(...) with 6 fields, at(...), or a crontab "
            f"line of 5 fields (min hour dom month dow) or 6 (sec min hour dom month dow), "
            f"got {len(parts)} fields"
        )
    return CronSchedule(text, _fields(text, parts, aws=False), tz)


def _fields(expression: str, parts: Sequence[str], *, aws: bool) -> CronFields:
    if aws and len(parts) != 6:
        raise ScheduleError(
            f"{expression}: AWS cron needs 6 fields (minutes hours day-of-month month "
            f"day-of-week year), got {len(parts)}"
        )
    try:
        return parse_fields(parts, aws=aws)
    except ValueError as exc:
        raise ScheduleError(f"{expression}: {exc}") from None


def _parse_rate(expression: str, body: str) -> RateSchedule:
    match = re.fullmatch(r"(\S+)\s+([A-Za-z]+)", body)
    if match is None or not re.fullmatch(r"[0-9]+", match[1]) or int(match[1]) == 0:
        raise ScheduleError(
            f"{expression}: expected rate(VALUE UNIT) with VALUE a positive integer"
        )
    value, unit = int(match[1]), match[2].lower()
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ScheduleError(
            f"{expression}: unit must be second(s), minute(s), hour(s) or day(s), got {unit!r}"
        )
    if value == 1 and unit != singular:
        raise ScheduleError(f"{expression}: use the singular unit {singular!r} when the value is 1")
    if value != 1 and unit == singular:
        raise ScheduleError(
            f"{expression}: use the plural unit '{singular}s' when the value is not 1"
        )
    return RateSchedule(expression, value * _UNITS[singular])


def _parse_at(expression: str, body: str, tz: ZoneInfo) -> AtSchedule:
    try:
        naive = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise ScheduleError(
            f"{expression}: expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2030-01-31T09:00:00)"
        ) from None
    return AtSchedule(expression, int(naive.replace(tzinfo=tz).timestamp()))


def recent_ticks(schedule: Schedule, after: float, until: float, n: int) -> list[int]:
    """The latest ``n`` ticks in ``(after, until]``, oldest first (catch-up after downtime).

    Searches a window back from ``until`` that grows until it holds ``n`` ticks or reaches
    ``after``, so a long downtime of a frequent schedule costs about ``n`` evaluations.
    """
    if n <= 0 or until <= after:
        return []
    window = max(schedule.period_s, 1.0) * (n + 1)
    while True:
        lo = max(after, until - window)
        ticks: deque[int] = deque(maxlen=n)
        tick = schedule.next_after(lo)
        while tick is not None and tick <= until:
            ticks.append(tick)
            tick = schedule.next_after(tick)
        if len(ticks) == n or lo <= after:
            return list(ticks)
        window *= 4
