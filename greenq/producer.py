"""Producer: one call in, one routed, validated and encoded message out. Nothing is sent here.

Owns what every way to enqueue shares (``delay``, ``apply_async``, ``send_task``, ``map``, the
asyncio and Django on-commit calls all end in ``Producer.build``): checking the arguments against
the task's signature, routing (static routes cached per settings), priority, the countdown / eta /
expires arithmetic, and encoding (``greenq.message``). The app owns one and sends what it builds.

Also the key of a unique call (``unique=True`` with a task id, or a ``unique_for`` task: name +
hash of the arguments). Imports: message, routing, signals (``before_task_publish``), task,
tracing (the producer span: its ``traceparent`` header), config (a type), orjson; ``broker.keys``
lazily, for the queue-name check. Never ``greenq.app``: the app is reached
through the ``ProducerApp`` Protocol below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from greenq import signals, tracing
from greenq.message import Message, encode, new_id, now
from greenq.routing import is_static, route_task
from greenq.shards import Picker
from greenq.task import Task, TaskOptions, check_priority, to_epoch

if TYPE_CHECKING:
    from greenq.config import Settings


def _unique(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    task_id: str | None,
    opts: TaskOptions | None,
    conf: Settings,
) -> tuple[str, int]:
    """(unique key, its TTL in ms) of a unique call: the task id when given with ``unique=True``,
    else the task name and a hash of its canonical JSON arguments (``unique_for`` tasks)."""
    ttl_s = opts.unique_for if opts is not None and opts.unique_for is not None else conf.task_unique_ttl
    if task_id is not None:
        return task_id, max(1, int(ttl_s * 1000))
    if opts is None or opts.unique_for is None:
        raise ValueError(f"task {name}: unique=True needs a task_id (the unique key)")
    try:
        canonical = orjson.dumps([list(args), kwargs], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        canonical = b""  # not JSON: encode() raises EncodeError naming the argument right after
    digest = hashlib.sha256(canonical).hexdigest()[:32]
    return f"{name}:{digest}", max(1, int(ttl_s * 1000))


def _traced() -> bool:
    """``tracing.active()``, reading the API's provider global directly: on every enqueue."""
    api = tracing.API
    return api._TRACER_PROVIDER is not None if api is not None else tracing.active()


class ProducerApp(Protocol):
    """What the producer reads from its app (a ``GreenQ``): the effective settings and tasks."""

    @property
    def conf(self) -> Settings: ...

    @property
    def tasks(self) -> dict[str, Task]: ...


class Producer:
    """Builds messages for one app; holds its route cache (rebuilt when the settings change)."""

    def __init__(self, app: ProducerApp) -> None:
        self._app = app
        # (task, call's queue, task's queue) -> (queue, route priority); valid for _routes_conf
        self._routes: dict[tuple[str, str | None, str | None], tuple[str, int | None]] = {}
        self._routes_conf: Settings | None = None
        self._shards = Picker()  # round robin over a sharded queue's shards (greenq.shards)

    def build(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        unique: bool = False,
        workflow: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        shard_key: str | None = None,
        announce: bool = True,
    ) -> tuple[Message, bytes]:
        """Route, validate and encode one call (``GreenQ.build_message`` documents it).
        ``workflow``: the message's links to a chain, chord or callbacks (``greenq.workflow``).
        ``headers``: the parent's headers, for a workflow's next step: it joins the parent's trace
        (``traceparent``) and keeps what ``before_task_publish`` receivers added. ``shard_key``:
        on a sharded queue (``queue_shards``), the same key goes to the same shard; a unique
        call's shard follows its unique key, any other call's goes round robin. ``announce=False``:
        a message built only to be looked at, never sent (no ``before_task_publish``)."""
        app = self._app
        conf = app.conf
        args = tuple(args) if args else ()
        kwargs = dict(kwargs) if kwargs else {}
        task = app.tasks.get(name)
        opts = task.options if task is not None else None
        if task is not None:
            task.check_arguments(args, kwargs)
        route_queue, route_priority = self._route(conf, name, queue, opts, args, kwargs)
        if priority is None:
            priority = opts.priority if opts is not None and opts.priority is not None else route_priority
            if priority is None:
                priority = conf.task_default_priority
        check_priority(priority, f"task {name}")
        if countdown is not None and eta is not None:
            raise ValueError("give countdown or eta, not both")
        created = now()
        eta_s = created + countdown if countdown is not None else to_epoch(eta)
        if expires is None and opts is not None:
            expires = opts.expires
        expires_s = created + expires if isinstance(expires, int | float) else to_epoch(expires)
        unique_key, unique_ttl_ms = None, 0
        if unique or (opts is not None and opts.unique_for is not None):
            unique_key, unique_ttl_ms = _unique(name, args, kwargs, task_id if unique else None, opts, conf)
        if conf.queue_shards and route_queue in conf.queue_shards:
            count = conf.queue_shards[route_queue]
            route_queue = self._shards.pick(route_queue, count, shard_key or unique_key)
        message_id = task_id or new_id()
        message = Message(
            id=message_id,
            task=name,
            args=args,
            kwargs=kwargs,
            queue=route_queue,
            priority=priority,
            eta=eta_s,
            expires=expires_s,
            created=created,
            unique=unique_key,
            unique_ttl_ms=unique_ttl_ms,
            workflow=workflow,
            headers=tracing.publish(name, route_queue, message_id, headers) if _traced() else headers,
        )
        if announce and signals.before_task_publish.receivers:
            message = signals.before_publish(message)
        return message, encode(message, conf.max_message_bytes, conf.message_signing_key)

    def _route(
        self,
        conf: Settings,
        name: str,
        queue: str | None,
        opts: TaskOptions | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, int | None]:
        """(queue, route priority) for one call. Cached per (task, call's queue, task's queue) and
        settings, unless ``task_routes`` holds a callable router: its answer may depend on the
        arguments."""
        if self._routes_conf is not conf:  # settings were rebuilt: routes may have changed
            self._routes, self._routes_conf = {}, conf
        key = (name, queue, opts.queue if opts else None)
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        route = route_task(
            name,
            call_queue=queue,
            task_queue=opts.queue if opts else None,
            routes=conf.task_routes,
            default_queue=conf.task_default_queue,
            args=args,
            kwargs=kwargs,
        )
        from greenq.broker.keys import check_queue_name

        found = (check_queue_name(route.queue), route.priority)
        if is_static(conf.task_routes):
            self._routes[key] = found
        return found
