"""Routing: which queue (and which pool) a task call goes to. Pure functions, no I/O.

Precedence, highest first: ``apply_async(queue=...)``; the task's own ``queue=``;
``task_routes``; ``task_default_queue``. ``task_routes`` takes the forms Celery users write:

* a dict of glob patterns: ``{"feed.tasks.*": {"queue": "feeds"}}`` (first match in order);
* a list or tuple of routers, each a dict as above, an ordered list of ``(pattern, route)``
  pairs where a pattern is a glob or a compiled regex, or a callable;
* a callable ``router(name, args, kwargs, options, task=None, **kw) -> route | None``.

A route is a dict with ``queue``, ``pool`` ("prefork" sends the task to child processes) and
``priority``, or just a queue name. Imports: exceptions.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from greenq.exceptions import ConfigError

ROUTE_KEYS = frozenset({"queue", "pool", "priority"})
POOL_KINDS = frozenset({"gevent", "prefork", "solo"})


@dataclass(frozen=True)
class Route:
    """Where a call goes: ``pool`` None means the worker's own pool."""

    queue: str
    pool: str | None = None
    priority: int | None = None


def _normalise(route: Any, where: str) -> dict[str, Any]:
    if isinstance(route, str):
        return {"queue": route}
    if not isinstance(route, Mapping):
        raise ConfigError(f"task_routes: route {route!r} at {where} must be a dict or a queue name")
    unknown = set(route) - ROUTE_KEYS
    if unknown:
        raise ConfigError(
            f"task_routes: unknown route key(s) {sorted(unknown)} at {where}; known: {sorted(ROUTE_KEYS)}"
        )
    if "pool" in route and route["pool"] not in POOL_KINDS:
        raise ConfigError(
            f"task_routes: pool {route['pool']!r} at {where}; expected one of {sorted(POOL_KINDS)}"
        )
    return dict(route)


def _matches(pattern: Any, name: str) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.match(name) is not None
    if isinstance(pattern, str):
        return fnmatch.fnmatchcase(name, pattern)
    raise ConfigError(f"task_routes: pattern {pattern!r} must be a glob string or a compiled regex")


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str | re.Pattern)
        and isinstance(item[1], str | Mapping)
    )


def _route_one(
    router: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], where: str
) -> dict[str, Any] | None:
    """Apply one router; None when it has no opinion."""
    if isinstance(router, Mapping):
        for pattern, route in router.items():
            if _matches(pattern, name):
                return _normalise(route, f"{where}[{pattern!r}]")
        return None
    if callable(router):
        result = router(name, list(args), dict(kwargs), {}, task=None)
        return None if result is None else _normalise(result, f"{where} (callable)")
    if _is_pair(router):
        return _normalise(router[1], where) if _matches(router[0], name) else None
    if isinstance(router, list | tuple):
        for index, item in enumerate(router):
            found = _route_one(item, name, args, kwargs, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    raise ConfigError(f"task_routes: router {router!r} at {where} is not a dict, list of pairs or callable")


def is_static(routes: Any) -> bool:
    """True when no router in ``routes`` is a callable: the route then depends only on the task
    name and the call's queue, and producers may cache it."""
    if callable(routes) and not isinstance(routes, Mapping):
        return False
    if isinstance(routes, list | tuple) and not _is_pair(routes):
        return all(is_static(item) for item in routes)
    return True


def validate_routes(routes: Any, where: str = "task_routes") -> None:
    """Raise ``ConfigError`` at configuration time for a malformed ``task_routes``: every route
    and pattern is checked, not only those a task name happens to match."""
    if routes is None or (callable(routes) and not isinstance(routes, Mapping)):
        return
    if isinstance(routes, Mapping):
        for pattern, route in routes.items():
            _matches(pattern, "")
            _normalise(route, f"{where}[{pattern!r}]")
    elif _is_pair(routes):
        _matches(routes[0], "")
        _normalise(routes[1], where)
    elif isinstance(routes, list | tuple):
        for index, item in enumerate(routes):
            validate_routes(item, f"{where}[{index}]")
    else:
        raise ConfigError(
            f"task_routes: router {routes!r} at {where} is not a dict, list of pairs or callable"
        )


def route_task(
    name: str,
    *,
    call_queue: str | None = None,
    task_queue: str | None = None,
    task_pool: str | None = None,
    routes: Any = None,
    default_queue: str = "default",
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Route:
    """Decide the queue and pool for one call of task ``name`` (see the module docstring)."""
    found = _route_one(routes, name, args, kwargs or {}, "task_routes") if routes is not None else None
    found = found or {}
    queue = call_queue or task_queue or found.get("queue") or default_queue
    return Route(queue=queue, pool=task_pool or found.get("pool"), priority=found.get("priority"))


RouterCallable = Callable[..., Any]
