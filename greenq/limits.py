"""Flow-control specs: Celery's rate strings, the limits that apply to one message, and the
deadline a running task gives the calls it makes.

Pure: no Redis, no worker. The settings (``queue_rate_limits``) and task options
(``rate_limit``, ``limit_key``, ``concurrency_limit``) are checked here when they are given;
the worker turns them into ``Check``s for ``gate.lua`` (docs/flow-control.md). The deadline is
a context variable set around a task body by the pool, read by ``greenq.http`` and
``app.redis`` as their default timeout. Imports: exceptions only (config imports this).
"""

from __future__ import annotations

import contextvars
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from greenq.exceptions import ConfigError

PERIODS_S = {"s": 1.0, "m": 60.0, "h": 3600.0}  # Celery's modifiers
NAME_MAX = 120  # a limit name longer than this is hashed (it goes inside a key name)


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate as Celery writes it (``"100/s"``, ``"10/m"``, ``"5/h"``, or a number per second)."""

    per_s: float
    text: str

    @property
    def interval_ms(self) -> float:
        """Time between two slots: a bucket admits one message per interval (no burst)."""
        return 1000.0 / self.per_s


def parse_rate(value: Any, where: str) -> Rate | None:
    """Celery's rate string, or a number per second; None, 0 and "0" mean no limit.

    Raises:
        ConfigError: not a rate (names where it came from).
    """
    if value is None or value == 0 or value == "0":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: rate limit {value!r} must be a string like '100/s' or a number")
    text = str(value).strip()
    count, _, unit = text.partition("/")
    try:
        per_s = float(count) / PERIODS_S[unit or "s"]
    except (ValueError, KeyError):
        raise ConfigError(
            f"{where}: rate limit {value!r} is not a rate; write it as Celery does: '100/s', '10/m', '5/h'"
        ) from None
    if not per_s > 0 or per_s == float("inf"):
        raise ConfigError(f"{where}: rate limit {value!r} must be positive")
    return Rate(per_s, text if unit else f"{text}/s")


def check_queue_rates(value: Mapping[str, Any], where: str) -> dict[str, str]:
    """``queue_rate_limits``: queue name -> rate string; each rate is checked now."""
    checked = {}
    for queue, rate in value.items():
        parsed = parse_rate(rate, f"{where} queue_rate_limits[{queue!r}]")
        if parsed is not None:
            checked[str(queue)] = parsed.text
    return checked


def check_task_limits(rate_limit: Any, limit_key: Any, concurrency_limit: Any, where: str) -> None:
    """The three flow-control task options, checked when the task is defined."""
    parse_rate(rate_limit, where)
    if limit_key is not None and not callable(limit_key):
        raise ConfigError(f"{where}: limit_key must be a function of the task's arguments, got {limit_key!r}")
    if concurrency_limit is not None and (
        isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, int) or concurrency_limit < 1
    ):
        raise ConfigError(f"{where}: concurrency_limit must be a positive int, got {concurrency_limit!r}")
    if limit_key is not None and rate_limit is None and concurrency_limit is None:
        raise ConfigError(f"{where}: limit_key needs rate_limit or concurrency_limit (what does it limit?)")


def limit_name(task: str, key: Any = None) -> str:
    """The name of a task's bucket or lease set: the task, or ``task|key`` for a keyed limit."""
    name = task if key is None else f"{task}|{key}"
    if len(name) > NAME_MAX:  # the task stays readable: the sweep finds its limit by it
        name = f"{task}|#{hashlib.sha1(name.encode()).hexdigest()}"
    return name


@dataclass(frozen=True, slots=True)
class Check:
    """What ``gate.lua`` checks for one reserved message: its rate buckets (name, rate), and
    its lease set (name, most held at once) if it has a concurrency limit."""

    rates: tuple[tuple[str | None, Rate], ...]  # None: the queue's own bucket
    lease: tuple[str, int] | None


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """A task's flow-control options, parsed once per task."""

    rate: Rate | None
    key: Callable[..., Any] | None
    concurrency: int | None

    def check(self, task: str, args: Any, kwargs: Mapping[str, Any], queue_rate: Rate | None) -> Check:
        """The check for one call. ``limit_key`` returning None: the call is not limited by key."""
        key = self.key(*args, **kwargs) if self.key is not None else None
        keyed = self.key is None or key is not None
        name = limit_name(task, key)
        rates: list[tuple[str | None, Rate]] = [(None, queue_rate)] if queue_rate is not None else []
        if self.rate is not None and keyed:
            rates.append((name, self.rate))
        lease = (name, self.concurrency) if self.concurrency is not None and keyed else None
        return Check(tuple(rates), lease)


NO_LIMITS = TaskLimits(None, None, None)


def task_limits(options: Any) -> TaskLimits:
    """The flow-control options of a task (its ``TaskOptions``)."""
    rate = parse_rate(getattr(options, "rate_limit", None), "rate_limit")
    key = getattr(options, "limit_key", None)
    concurrency = getattr(options, "concurrency_limit", None)
    if rate is None and concurrency is None:
        return NO_LIMITS
    return TaskLimits(rate, key, concurrency)


# ---- the arguments of gate.lua and release.lua (``keys``: greenq.broker.keys.Keys) ---------


def gate_args(
    keys: Any, group: str, queue: str, items: Sequence[tuple[Any, str, Check]], lease_ttl_ms: int
) -> list[Any]:
    """KEYS count, KEYS and ARGV of one ``gate.lua`` call: (delivery, task id, check) items of
    one queue."""
    bands = keys.bands(queue)
    names = [*bands, keys.delayed(queue), keys.paid(queue), keys.parked_names(queue)]
    index: dict[str, int] = {}

    def at(key: str) -> int:
        if key not in index:
            names.append(key)
            index[key] = len(names)
        return index[key]

    band_of = {band: i + 1 for i, band in enumerate(bands)}
    argv: list[Any] = [group, lease_ttl_ms, len(items)]
    for delivery, task_id, check in items:
        argv += [band_of[delivery.stream], delivery.priority, delivery.entry_id, task_id, delivery.deliveries]
        argv.append(len(check.rates))
        for name, rate in check.rates:
            argv += [at(keys.queue_rate(queue) if name is None else keys.rate(queue, name)), rate.interval_ms]
        if check.lease is None:
            argv += [0, 0, 0, ""]
        else:
            name, most = check.lease
            argv += [at(keys.lease(queue, name)), most, at(keys.parked(queue, name)), name]
    return [len(names), *names, *argv]


@dataclass(slots=True)
class LeaseWork:
    """What one worker does to one lease set in a ``release.lua`` call."""

    most: int
    release: list[str] = field(default_factory=list)
    extend: list[str] = field(default_factory=list)


def release_args(keys: Any, queue: str, work: Mapping[str, LeaseWork], lease_ttl_ms: int) -> list[Any]:
    """KEYS count, KEYS and ARGV of one ``release.lua`` call on ``queue``: lease name -> work."""
    names = [*keys.bands(queue), keys.parked_names(queue)]
    argv: list[Any] = [lease_ttl_ms, len(work)]
    for name, item in work.items():
        names += [keys.lease(queue, name), keys.parked(queue, name)]
        argv += [name, item.most, len(item.release), *item.release, len(item.extend), *item.extend]
    return [len(names), *names, *argv]


# ---- deadlines ---------------------------------------------------------------------------

# NOTE: the epoch time by which the running task must be done; set by the pool around the body.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("greenq_deadline", default=None)


def deadline_of(started: float, time_limit: float | None, soft: float | None, expires: Any) -> float | None:
    """The soonest of the task's soft limit, hard limit and ``expires`` (epoch seconds)."""
    ends = [started + limit for limit in (soft, time_limit) if limit]
    if isinstance(expires, int | float):
        ends.append(float(expires))
    return min(ends) if ends else None


def set_deadline(deadline: float | None) -> contextvars.Token[float | None]:
    return _DEADLINE.set(deadline)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _DEADLINE.reset(token)


def remaining_s() -> float | None:
    """Seconds the running task has left (may be <= 0), or None outside a task or without limits."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.time()
