"""The fields of a cron expression: parsing, and matching dates and times of day.

Used by :mod:`eventrun.sources.cron._schedule`, which owns the expression grammar and the
time-zone rules; this module only knows fields. Errors are ``ValueError`` with a message
naming the field and the bad part; the caller prefixes the whole expression.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

__all__ = ["MAX_YEAR", "CronFields", "parse_fields"]

MAX_YEAR = 2199
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NUM = re.compile(r"[0-9]+")
_DAY_WORD = r"([0-9]+|[A-Z]{3})"


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: tuple[str, ...] = ()
    first_name: int = 0
    """The number ``names[0]`` stands for."""


_SECOND = _Field("seconds", 0, 59)
_MINUTE = _Field("minutes", 0, 59)
_HOUR = _Field("hours", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS, 1)
_DOW_AWS = _Field("day-of-week", 1, 7, _DAYS, 1)
_DOW_CRONTAB = _Field("day-of-week", 0, 7, _DAYS, 0)
_YEAR = _Field("year", 1970, MAX_YEAR)


def _value(token: str, field: _Field) -> int:
    word = token.upper()
    if word in field.names:
        return field.names.index(word) + field.first_name
    if not _NUM.fullmatch(word):
        what = f"a number or a name like {field.names[0]}" if field.names else "a number"
        raise ValueError(f"{field.name}: expected {what}, got {token!r}")
    value = int(word)
    if not field.lo <= value <= field.hi:
        raise ValueError(f"{field.name}: {value} is out of range {field.lo}-{field.hi}")
    return value


def _expand(text: str, field: _Field) -> frozenset[int]:
    """Values of a list of ``*``, ``a``, ``a-b``, each optionally ``/step``."""
    if "?" in text:
        raise ValueError(f"{field.name}: '?' is allowed only in day-of-month or day-of-week")
    values: set[int] = set()
    for term in text.split(","):
        base, slash, step_text = term.partition("/")
        if slash and (not _NUM.fullmatch(step_text) or int(step_text) == 0):
            raise ValueError(f"{field.name}: the step in {term!r} must be a positive integer")
        step = int(step_text) if slash else 1
        if base == "*":
            lo, hi = field.lo, field.hi
        elif "-" in base:
            first, _, last = base.partition("-")
            lo, hi = _value(first, field), _value(last, field)
            if hi < lo:
                raise ValueError(f"{field.name}: the range {base!r} runs backwards")
        else:
            lo = _value(base, field)
            hi = field.hi if slash else lo
        values.update(range(lo, hi + 1, step))
    return frozenset(values)


def _weekday_near(d: date, n: int, last_day: int) -> int:
    """The weekday nearest to day ``n`` of ``d``'s month, not leaving the month (0: none)."""
    if n > last_day:
        return 0
    weekday = calendar.weekday(d.year, d.month, n)
    if weekday == 5:  # Saturday: the Friday before, or Monday the 3rd
        return n - 1 if n > 1 else n + 2
    if weekday == 6:  # Sunday: the Monday after, or the Friday before the month's end
        return n + 1 if n < last_day else n - 2
    return n


@dataclass(frozen=True, slots=True)
class _Dom:
    days: frozenset[int] = frozenset()
    last: bool = False
    last_weekday: bool = False
    nearest: int = 0

    def matches(self, d: date, last_day: int) -> bool:
        if self.last:
            return d.day == last_day
        if self.last_weekday:
            return d.day == _weekday_near(d, last_day, last_day)
        if self.nearest:
            return d.day == _weekday_near(d, self.nearest, last_day)
        return d.day in self.days


@dataclass(frozen=True, slots=True)
class _Dow:
    weekdays: frozenset[int] = frozenset()
    """0 = Sunday ... 6 = Saturday, whatever the expression's numbering."""
    last: int = -1
    """``nL``: the last such weekday of the month."""
    nth: tuple[int, int] = (-1, 0)
    """``n#k``: (weekday, k)."""

    def matches(self, d: date, last_day: int) -> bool:
        weekday = (d.weekday() + 1) % 7
        if self.last >= 0:
            return weekday == self.last and d.day + 7 > last_day
        if self.nth[1]:
            return weekday == self.nth[0] and (d.day + 6) // 7 == self.nth[1]
        return weekday in self.weekdays


def _parse_dom(text: str) -> _Dom | None:
    word = text.upper()
    if word in ("*", "?"):
        return None
    if word == "L":
        return _Dom(last=True)
    if word == "LW":
        return _Dom(last_weekday=True)
    if match := re.fullmatch(r"([0-9]+)W", word):
        return _Dom(nearest=_value(match[1], _DOM))
    if "L" in word or "W" in word:
        raise ValueError(f"day-of-month: L, LW and nW must stand alone, got {text!r}")
    return _Dom(days=_expand(word, _DOM))


def _parse_dow(text: str, *, aws: bool) -> _Dow | None:
    field = _DOW_AWS if aws else _DOW_CRONTAB

    def weekday(token: str) -> int:
        value = _value(token, field)
        return value - 1 if aws else value % 7

    word = text.upper()
    if word in ("*", "?"):
        return None
    if word == "L":
        return _Dow(weekdays=frozenset({6}))
    if match := re.fullmatch(_DAY_WORD + "L", word):
        return _Dow(last=weekday(match[1]))
    if match := re.fullmatch(_DAY_WORD + r"#([0-9]+)", word):
        if not 1 <= int(match[2]) <= 5:
            raise ValueError(f"day-of-week: the k in n#k must be 1-5, got {text!r}")
        return _Dow(nth=(weekday(match[1]), int(match[2])))
    if "L" in word or "#" in word:
        raise ValueError(f"day-of-week: L, nL and n#k must stand alone, got {text!r}")
    return _Dow(weekdays=frozenset(weekday(str(v)) for v in _expand(word, field)))


@dataclass(frozen=True, slots=True)
class CronFields:
    """A parsed cron expression: which years, months, days and times of day match."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    years: frozenset[int] | None
    dom: _Dom | None
    dow: _Dow | None
    either: bool
    """Vixie cron's rule: both day fields restricted, a day matches either one."""

    def skip_to(self, day: date) -> date | None:
        """A later first candidate date when ``day``'s year or month never matches."""
        if self.years is not None and day.year not in self.years:
            later = [y for y in self.years if y > day.year]
            return date(min(later), 1, 1) if later else date(MAX_YEAR + 1, 1, 1)
        if day.month not in self.months:
            if day.month == 12:
                return date(day.year + 1, 1, 1)
            return date(day.year, day.month + 1, 1)
        return None

    def day_matches(self, d: date) -> bool:
        last_day = calendar.monthrange(d.year, d.month)[1]
        dom_ok = self.dom is None or self.dom.matches(d, last_day)
        dow_ok = self.dow is None or self.dow.matches(d, last_day)
        return (dom_ok or dow_ok) if self.either else (dom_ok and dow_ok)

    def times_from(self, start: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
        """Matching (hour, minute, second) at or after ``start``, in order."""
        h0, m0, s0 = start
        for h in self.hours[bisect_left(self.hours, h0) :]:
            minutes = self.minutes if h > h0 else self.minutes[bisect_left(self.minutes, m0) :]
            for m in minutes:
                later = h > h0 or m > m0
                seconds = self.seconds if later else self.seconds[bisect_left(self.seconds, s0) :]
                for s in seconds:
                    yield h, m, s


def parse_fields(parts: Sequence[str], *, aws: bool) -> CronFields:
    """Fields of AWS cron (``min hour dom month dow year``) or crontab (5, or 6 with
    seconds first); raise ValueError naming the bad field."""
    if aws:
        minute, hour, dom, month, dow, year = parts
        second = "0"
    elif len(parts) == 5:
        minute, hour, dom, month, dow = parts
        second, year = "0", "*"
    else:
        second, minute, hour, dom, month, dow = parts
        year = "*"
    if aws and (dom == "?") == (dow == "?"):
        raise ValueError(
            "exactly one of day-of-month and day-of-week must be '?' "
            f"(got {dom!r} and {dow!r}); e.g. cron(0 9 ? * MON-FRI *) or cron(0 9 1 * ? *)"
        )
    dom_spec, dow_spec = _parse_dom(dom), _parse_dow(dow, aws=aws)
    return CronFields(
        seconds=tuple(sorted(_expand(second, _SECOND))),
        minutes=tuple(sorted(_expand(minute, _MINUTE))),
        hours=tuple(sorted(_expand(hour, _HOUR))),
        months=_expand(month, _MONTH),
        years=None if year == "*" else _expand(year, _YEAR),
        dom=dom_spec,
        dow=dow_spec,
        either=dom_spec is not None
        and dow_spec is not None
        and not dom.startswith("*")
        and not dow.startswith("*"),
    )
