"""Periodic schedules as pure values: ``Schedule`` (when it fires, what a restart missed),
loading Celery's ``beat_schedule``, and the ``@app.periodic`` decorator.

Owns the arithmetic of fire times only: claiming a fire in Redis and enqueueing it is the
scheduler's job (``docs/schedules.md``). Pure: stdlib only, no Redis, no gevent, no clock reads
(every call takes the time it reasons about). Imports ``cron`` (crontab, re-exported here) and
``exceptions``; the app is reached through the ``PeriodicApp`` Protocol, never imported.

Fire times are a function of the schedule alone, so every worker computes the same ones
without shared state:

* Interval schedules fire at the instants aligned to the Unix epoch: ``t % every_s == 0`` in UTC
  epoch seconds (``every=30`` fires at :00 and :30 of each minute, ``every=3600`` on each UTC
  hour), counted in whole milliseconds (a sub-second interval is rounded to the ms). Unlike
  Celery's, they do not depend on when a process started or last ran; DST does not touch them.
* Cron schedules follow wall-clock time in ``tz``, DST rules in ``greenq.cron``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from greenq.cron import SEARCH_YEARS, crontab, parse_cron
from greenq.exceptions import ConfigError

__all__ = ["Schedule", "build_schedules", "crontab", "parse_cron", "periodic"]

CATCH_UP_POLICIES = ("latest", "all", "skip")
# A fire time at most this old still fires when nothing fired it (new schedule, policy "skip").
FRESH_S = 1.0
# apply_async options a schedule may carry.
SCHEDULE_OPTIONS = ("queue", "priority", "expires", "countdown")
# Keys of a beat_schedule entry: Celery's, then greenq's.
ENTRY_KEYS: tuple[str, ...] = ("task", "schedule", "args", "kwargs", "options", "relative", "tz")
ENTRY_KEYS += ("catch_up", "max_catch_up", "overlap")
# Schedule.tz of an ``@app.periodic`` without ``tz``: build_schedules puts the app's ``timezone``.
APP_TIMEZONE = ""

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_US = timedelta(microseconds=1)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {value!r}")
    return value


@dataclass(frozen=True)
class Schedule:
    """One periodic task: what to send and when. Exactly one of ``every_s`` and ``cron``.

    Attributes:
        options: ``apply_async`` options sent with each fire (``SCHEDULE_OPTIONS``).
        tz: IANA zone in which ``cron`` is read (ignored by interval schedules).
        catch_up: what ``missed()`` returns after fire times went by unfired: ``"latest"``,
            ``"all"`` (at most ``max_catch_up``, the newest) or ``"skip"``.
        overlap: False: a fire is not sent while the previous one's task still runs.

    Raises:
        ValueError: no or two kinds of schedule, ``every_s`` <= 0 (or under 1 ms), unknown
            time zone, unknown catch_up, ``max_catch_up`` < 1.
    """

    name: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    every_s: float | None = None
    cron: crontab | None = None
    tz: str = "UTC"
    catch_up: str = "latest"
    max_catch_up: int = 100
    overlap: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        object.__setattr__(self, "options", dict(self.options))
        if (self.every_s is None) == (self.cron is None):
            raise ValueError("give exactly one of an interval (every) and a cron schedule")
        if self.every_s is not None and (isinstance(self.every_s, bool) or not self.every_s >= 0.001):
            raise ValueError(f"interval {self.every_s!r} must be a number of seconds >= 0.001")
        _zone(self.tz)
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ValueError(f"catch_up {self.catch_up!r} must be one of {', '.join(CATCH_UP_POLICIES)}")
        if (
            isinstance(self.max_catch_up, bool)
            or not isinstance(self.max_catch_up, int)
            or self.max_catch_up < 1
        ):
            raise ValueError(f"max_catch_up {self.max_catch_up!r} must be an int >= 1")

    def _every_us(self) -> int:
        assert self.every_s is not None
        return round(self.every_s * 1000) * 1000

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware, any zone), as aware UTC.

        Raises:
            ValueError: ``after`` is naive, or the crontab has no fire time within SEARCH_YEARS.
        """
        _aware(after, "after")
        if self.cron is None:
            every = self._every_us()
            return _EPOCH + _US * ((_micros(after) // every + 1) * every)
        found = self.cron.search(after, _zone(self.tz), forward=True)
        if found is None:
            raise ValueError(f"schedule {self.name!r}: no fire time within {SEARCH_YEARS} years")
        return found

    def previous_fire(self, at_or_before: datetime) -> datetime | None:
        """The last fire time at or before the given instant, as aware UTC (None: none in reach)."""
        _aware(at_or_before, "at_or_before")
        if self.cron is None:
            every = self._every_us()
            return _EPOCH + _US * (_micros(at_or_before) // every * every)
        return self.cron.search(at_or_before, _zone(self.tz), forward=False)

    def fires_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Fire times ``t`` with ``start < t <= end``, oldest first, aware UTC.

        Bounded: at most ``max_catch_up + 1`` entries; when more fall in the window, the newest
        are kept (catching up after an outage is about the recent ones).
        """
        _aware(start, "start")
        found: list[datetime] = []
        when = self.previous_fire(_aware(end, "end"))
        while when is not None and when > start and len(found) <= self.max_catch_up:
            found.append(when)
            when = self.previous_fire(when - _US)
        return found[::-1]

    def missed(self, last_fire: datetime | None, now: datetime) -> list[datetime]:
        """The fire times to send at ``now``, given the last fire that was sent (None: never).

        Only fire times in ``(last_fire, now]`` count, then by ``catch_up``: ``"latest"``: the
        newest of them; ``"all"``: all of them, at most ``max_catch_up`` (the newest);
        ``"skip"``: the newest only if it is at most ``FRESH_S`` (1 s) old, i.e. it is due now
        rather than missed. A schedule that never fired sends only such a fresh fire time,
        whatever its policy: a new schedule does not fire for the past.
        """
        latest = self.previous_fire(_aware(now, "now"))
        if latest is None or (last_fire is not None and latest <= _aware(last_fire, "last_fire")):
            return []
        fresh = now - latest <= timedelta(seconds=FRESH_S)
        if last_fire is None or self.catch_up == "skip":
            return [latest] if fresh else []
        if self.catch_up == "latest":
            return [latest]
        return self.fires_between(last_fire, now)[-self.max_catch_up :]

    def describe(self) -> str:
        """In words, for ``greenq schedule list``: ``"every 30 s"``, ``"every 5 min"``,
        ``"cron */5 9-17 * * mon-fri (Europe/Moscow)"``."""
        if self.cron is not None:
            return f"cron {self.cron.expression} ({self.tz or 'UTC'})"
        seconds = self._every_us() / 1e6
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size and seconds % size == 0:
                return f"every {seconds // size:g} {unit}"
        return f"every {seconds:g} s"


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _US


# ---- configuration: beat_schedule and @app.periodic -------------------------------------


def _interval(value: Any) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _from_entry(name: str, entry: Mapping[str, Any], default_tz: str) -> Schedule:
    """One ``beat_schedule`` entry -> Schedule; ValueError/TypeError say what is wrong."""
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ValueError(f"unknown key {key!r}{_suggest(key, ENTRY_KEYS)}")
    for key in ("task", "schedule"):
        if key not in entry:
            raise ValueError(f"no {key!r} key")
    if entry.get("relative"):
        raise ValueError("relative=True is not supported: interval schedules are aligned to the epoch")
    every, cron = _interval(entry["schedule"]), entry["schedule"]
    if isinstance(cron, str):
        cron = parse_cron(cron)
    if every is None and not isinstance(cron, crontab):
        raise ValueError(f"schedule {cron!r} must be seconds, a timedelta, a crontab or a cron string")
    options = dict(entry.get("options") or {})
    for key in options:
        if key not in SCHEDULE_OPTIONS:
            raise ValueError(f"unknown option {key!r}{_suggest(key, SCHEDULE_OPTIONS)}")
    return Schedule(
        name=name,
        task=entry["task"],
        args=tuple(entry.get("args") or ()),
        kwargs=dict(entry.get("kwargs") or {}),
        options=options,
        every_s=every,
        cron=None if every is not None else cron,
        tz=entry.get("tz") or default_tz,
        catch_up=entry.get("catch_up", "latest"),
        max_catch_up=entry.get("max_catch_up", 100),
        overlap=entry.get("overlap", True),
    )


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def build_schedules(
    beat_schedule: Mapping[str, Mapping[str, Any]],
    periodic: Sequence[Schedule],
    known_tasks: Collection[str],
    default_tz: str,
) -> list[Schedule]:
    """Every schedule of an app, checked: ``beat_schedule`` entries (Celery's format plus
    greenq's ``tz``, ``catch_up``, ``max_catch_up``, ``overlap``) then ``@app.periodic`` ones.

    Args:
        default_tz: the ``timezone`` setting, for cron schedules that name no zone.

    Raises:
        ConfigError: naming the schedule: unknown key, task, option or time zone, a malformed
            cron, a bad interval or catch_up, ``relative=True``, or a name used twice.
    """
    try:
        _zone(default_tz)
    except ValueError as exc:
        raise ConfigError(f"setting 'timezone': {exc}") from None
    found: dict[str, Schedule] = {}
    for name, entry in beat_schedule.items():
        try:
            if not isinstance(entry, Mapping):
                raise ValueError(f"expected a dict, got {type(entry).__name__}")
            found[name] = _from_entry(name, entry, default_tz)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schedule {name!r}: {exc}") from None
    for schedule in periodic:
        if schedule.name in found:
            raise ConfigError(
                f"schedule {schedule.name!r} is defined twice (beat_schedule and @app.periodic)"
            )
        found[schedule.name] = schedule if schedule.tz else replace(schedule, tz=default_tz)
    for schedule in found.values():
        if schedule.task not in known_tasks:
            hint = _suggest(schedule.task, known_tasks)
            raise ConfigError(f"schedule {schedule.name!r}: unknown task {schedule.task!r}{hint}")
    return list(found.values())


class PeriodicApp(Protocol):
    """What ``periodic`` needs of an app; a ``GreenQ`` satisfies it."""

    _periodic: list[Schedule]

    def task(self, fn: Callable[..., Any]) -> Any: ...


def periodic(
    app: PeriodicApp,
    fn: Callable[..., Any] | None = None,
    *,
    every: float | timedelta | None = None,
    cron: str | crontab | None = None,
    tz: str | None = None,
    name: str | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    catch_up: str = "latest",
    max_catch_up: int = 100,
    overlap: bool = True,
) -> Any:
    """Run a task on a schedule: ``@app.periodic(every=30)`` or
    ``@app.periodic(cron="*/5 9-17 * * mon-fri", tz="Europe/Moscow")`` (``GreenQ.periodic``).

    Put it above ``@app.task(...)``; on a plain function it registers the task too, with default
    options. Returns the Task. ``name`` defaults to the task's name; ``tz`` to the app's
    ``timezone`` setting. The other arguments are ``Schedule``'s.

    Raises:
        ConfigError: at the decorated line: neither or both of every and cron, a malformed cron,
            unknown time zone or option, bad catch_up, a schedule name used twice.
    """

    def register(function: Callable[..., Any]) -> Any:
        if (every is None) == (cron is None):
            raise ConfigError(f"@periodic on {function!r}: give exactly one of every= and cron=")
        is_task = isinstance(getattr(function, "name", None), str) and hasattr(function, "delay")
        task: Any = function if is_task else app.task(function)
        label = name or task.name
        try:
            entry = {"task": task.name, "schedule": every if cron is None else cron, "args": args}
            entry |= {"kwargs": kwargs, "options": options, "catch_up": catch_up}
            entry |= {"max_catch_up": max_catch_up, "overlap": overlap, "tz": tz}
            schedule = _from_entry(label, entry, APP_TIMEZONE)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schedule {label!r}: {exc}") from None
        if any(known.name == label for known in app._periodic):
            raise ConfigError(f"schedule {label!r} is registered twice; pass name=...")
        app._periodic.append(schedule)
        return task

    return register(fn) if fn is not None else register
