"""Task options: the table of what ``@app.task(...)`` accepts, checked when a task is defined.

Unknown options are an error naming the closest one (Celery drops them silently). Also the
priority check and the datetime-or-seconds conversion the producer shares. Split from
``greenq.task`` (which re-exports these names). Imports: exceptions, message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from greenq.exceptions import ConfigError
from greenq.limits import check_task_limits
from greenq.message import PRIORITY_MAX, PRIORITY_MIN


@dataclass(frozen=True)
class TaskOptions:
    """Options given to ``@app.task(...)``; None means "use the app's setting"."""

    name: str | None = None
    queue: str | None = None
    acks_late: bool | None = None
    bind: bool = False
    max_retries: int | None = 3
    default_retry_delay: float = 180.0
    autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | None = None
    priority: int | None = None
    cpu: bool = False
    ignore_result: bool | None = None
    track_started: bool | None = None
    dead_letter_on_failure: bool = False
    typing: bool = True
    unique_for: float | None = None  # every enqueue is unique by name + arguments, for this many s
    # Flow control (docs/flow-control.md): global over all workers, unlike Celery's per-worker rate.
    rate_limit: str | float | None = None  # "100/s", "10/m", "5/h", or a number per second
    limit_key: Callable[..., Any] | None = None  # f(*args, **kwargs) -> key: limits per key
    concurrency_limit: int | None = None  # at most this many running at once (per key)


OPTION_NAMES = tuple(f.name for f in fields(TaskOptions))
# Celery's retry_kwargs for autoretry_for: what greenq can honour (the rest raises ConfigError).
RETRY_KWARGS = ("max_retries", "countdown")


def _retry_kwargs(given: dict[str, Any], where: str) -> dict[str, Any]:
    """Fold Celery's ``retry_kwargs={"max_retries": n, "countdown": s}`` into the options."""
    given = dict(given)
    retry_kwargs = given.pop("retry_kwargs") or {}
    unknown = sorted(set(retry_kwargs) - set(RETRY_KWARGS))
    if unknown:
        raise ConfigError(f"{where}: retry_kwargs {unknown} not supported (only {', '.join(RETRY_KWARGS)})")
    if "max_retries" in retry_kwargs:
        given["max_retries"] = retry_kwargs["max_retries"]
    if "countdown" in retry_kwargs:
        given["default_retry_delay"] = float(retry_kwargs["countdown"])
    return given


def make_options(given: dict[str, Any], where: str) -> TaskOptions:
    """Build TaskOptions; an unknown option raises ``ConfigError`` with the closest name."""
    if "retry_kwargs" in given:
        given = _retry_kwargs(given, where)
    for key in given:
        if key not in OPTION_NAMES:
            close = difflib.get_close_matches(key, OPTION_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown task option {key!r}{hint}")
    if "autoretry_for" in given:
        given = {**given, "autoretry_for": tuple(given["autoretry_for"])}
    options = TaskOptions(**given)
    check_priority(options.priority, where)
    check_task_limits(options.rate_limit, options.limit_key, options.concurrency_limit, where)
    return options


def check_priority(priority: int | None, where: str) -> None:
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        raise ConfigError(
            f"{where}: priority {priority!r} must be an int from {PRIORITY_MIN} to {PRIORITY_MAX}"
        )


def to_epoch(when: datetime | float | None) -> float | None:
    """A datetime (naive means UTC) or epoch seconds, as epoch seconds."""
    if when is None or isinstance(when, int | float):
        return when
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    raise TypeError(f"expected a datetime or epoch seconds, got {type(when).__name__}")
