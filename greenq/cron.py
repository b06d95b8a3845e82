"""Cron expressions: ``crontab`` (Celery's fields and forms), ``parse_cron``, and the search for
a crontab's next or previous fire time in a time zone, DST included.

Owns wall-clock arithmetic only; ``greenq.schedules`` builds schedules on it. Pure: stdlib
only, imports nothing from greenq.

Rules (``docs/schedules.md``):

* A crontab matches wall-clock time in its zone; fire times are returned in UTC.
* A wall time that does not exist (the spring-forward gap) fires once, at the first instant
  after the gap (02:30 fires at 03:00 local, as cronie does). A wall time that happens twice
  (fall-back) fires once, at its first occurrence (fold=0). So each wall-clock time fires once:
  an hourly crontab fires 23 times on the spring-forward day, 24 times on the 25-hour fall-back
  day.
* ``day_of_month`` and ``day_of_week`` must BOTH match, as in Celery (celery#4307); Vixie cron
  fires when either does.
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

# Cron search bound: Feb 29 on a given weekday can be 40 years away; an impossible date
# (Feb 30) is refused when the crontab is built.
SEARCH_YEARS = 60

_UTC = timezone.utc
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, 1)}
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def _parse_field(field_name: str, spec: Any, low: int, high: int, names: Mapping[str, int]) -> frozenset[int]:
    """One crontab field -> the set of values it matches; ValueError naming the field."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    elif not isinstance(spec, str):
        if not isinstance(spec, Iterable):
            raise ValueError(f"crontab {field_name}: {spec!r} is not a string, an int or ints")
        spec = ",".join(str(part) for part in spec)
    values: set[int] = set()
    for item in spec.strip().lower().split(","):
        match = _ITEM.match(item.strip())
        if match is None:
            raise ValueError(f"crontab {field_name}: cannot parse {item!r} of {spec!r}")
        span, step = match.group(1), int(match.group(2) or 1)
        if step == 0:
            raise ValueError(f"crontab {field_name}: step 0 in {item!r}")
        if span == "*":
            first, last = low, (6 if names is _DAYS else high)
        else:
            ends = [_number(field_name, part, low, high, names) for part in span.split("-")]
            first, last = ends[0], ends[-1] if len(ends) > 1 else (high if match.group(2) else ends[0])
        wrap = range(first, high + 1) if last < first else range(first, last + 1)
        picked = list(wrap) + (list(range(low, last + 1)) if last < first else [])
        values.update(picked[::step])
    return frozenset(values)


def _number(field_name: str, text: str, low: int, high: int, names: Mapping[str, int]) -> int:
    value = names.get(text[:3]) if text[:3] in names and text.isalpha() else None
    if value is None:
        if not text.isdigit():
            raise ValueError(f"crontab {field_name}: unknown value {text!r}")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"crontab {field_name}: {value} is out of range {low}-{high}")
    return value


class crontab:  # Celery's name (lowercase), so a copied beat_schedule only changes its import
    """A cron schedule, Celery-compatible: ``crontab(minute="*/5", hour="9-17", day_of_week="mon-fri")``.

    Each field takes ``"*"``, ``"*/5"``, ``"1,2,3"``, ``"9-17"``, ``"9-17/2"``, ``"5/15"`` (5 to the
    end, every 15), an int, or an iterable of ints; day_of_week also takes day names (``sun`` ..
    ``sat``, ``mon-fri``; Sunday is 0 and 7), month_of_year month names (``jan`` .. ``dec``).
    Ranges may wrap (``fri-mon``). As in Celery, day_of_month and day_of_week must both match.

    Raises:
        ValueError: a field does not parse (the message names it), or the date can never happen
            (``day_of_month=30, month_of_year=2``).
    """

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
    ) -> None:
        given = {"minute": minute, "hour": hour, "day_of_month": day_of_month}
        given |= {"month_of_year": month_of_year, "day_of_week": day_of_week}
        self.fields = {name: _text(value) for name, value in given.items()}
        self.minutes = _parse_field("minute", minute, 0, 59, {})
        self.hours = _parse_field("hour", hour, 0, 23, {})
        self.days_of_month = _parse_field("day_of_month", day_of_month, 1, 31, {})
        self.months = _parse_field("month_of_year", month_of_year, 1, 12, _MONTHS)
        self.days_of_week = frozenset(d % 7 for d in _parse_field("day_of_week", day_of_week, 0, 7, _DAYS))
        if not any(day <= _month_days(2000, month) for month in self.months for day in self.days_of_month):
            raise ValueError(f"crontab {self.expression!r} can never fire: no month has such a day")
        self._times = sorted((h, m) for h in self.hours for m in self.minutes)

    @property
    def expression(self) -> str:
        """The five cron fields as given: ``"*/5 9-17 * * mon-fri"``."""
        return " ".join(self.fields.values())

    def __repr__(self) -> str:
        return "crontab(" + ", ".join(f"{name}={text!r}" for name, text in self.fields.items()) + ")"

    def _key(self) -> tuple[frozenset[int], ...]:
        return (self.minutes, self.hours, self.days_of_month, self.months, self.days_of_week)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _days(self, start: date, forward: bool) -> Iterator[date]:
        """Matching dates from ``start`` (included) onwards or backwards, for SEARCH_YEARS."""
        step = 1 if forward else -1
        first = start.year * 12 + start.month - 1
        doms = sorted(self.days_of_month, reverse=not forward)
        for index in range(first, first + step * 12 * SEARCH_YEARS, step):
            year, month = divmod(index, 12)
            if month + 1 not in self.months:
                continue
            for dom in doms:
                if dom > _month_days(year, month + 1):
                    continue
                day = date(year, month + 1, dom)
                if (day >= start if forward else day <= start) and (
                    day.isoweekday() % 7
                ) in self.days_of_week:
                    yield day

    def search(self, bound: datetime, zone: ZoneInfo, forward: bool) -> datetime | None:
        """The first fire time (UTC) strictly after ``bound`` (forward) or the last one at or
        before it; None if there is none within SEARCH_YEARS.

        NOTE: wall time -> instant (``_instant``) never decreases as wall time grows, so the
        first wall time past the bound's own wall time (less a margin for a repeated hour when
        searching back) whose instant passes the test is the answer.
        """
        local = bound.astimezone(zone).replace(tzinfo=None)
        if not forward and zone.utcoffset(local - timedelta(days=1)) != zone.utcoffset(local):
            local += timedelta(hours=3)  # a fall-back hour just behind: its wall times lie ahead
        start = (local.hour, local.minute)
        for day in self._days(local.date(), forward):
            times = self._times
            if day == local.date():  # the bound's own day: only the times on its side
                cut = bisect.bisect_left(times, start) if forward else bisect.bisect_right(times, start)
                times = times[cut:] if forward else times[:cut]
            for hour, minute in times if forward else reversed(times):
                instant = _instant(datetime(day.year, day.month, day.day, hour, minute), zone)
                if (instant > bound) if forward else (instant <= bound):
                    return instant
        return None


def _text(value: Any) -> str:
    if isinstance(value, str | int):
        return str(value).strip().lower()
    return ",".join(str(part) for part in value) if isinstance(value, Iterable) else repr(value)


def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time: the first occurrence of a repeated one, the end of
    the gap for one that does not exist."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # The transition lies between the two readings of the wall time (folds use either offset).
    low, high = sorted((first, wall.replace(tzinfo=zone, fold=1).astimezone(_UTC)))
    after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):  # the transition: first instant with the new offset
        middle = low + (high - low) / 2
        low, high = (low, middle) if middle.astimezone(zone).utcoffset() == after else (middle, high)
    return high.replace(microsecond=0)


def parse_cron(expression: str) -> crontab:
    """Five fields ``"minute hour day-of-month month day-of-week"`` -> crontab.

    Raises:
        ValueError: not five fields, or a field that does not parse (named).
    """
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(parts)} fields; expected 5: minute hour dom month dow"
        )
    minute, hour, day_of_month, month_of_year, day_of_week = parts
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
