"""GreenQ: the application object — task registry, settings and their sources, the lazily
built broker and Redis clients, and the public enqueue calls.

The only long-lived mutable object in greenq. Producer side only: it never imports gevent,
the worker or pools, so any service (Django, Flask, FastAPI, scripts) can enqueue. Building a
message (routing, validation, encoding) is ``greenq.producer``'s job; ``app.control`` is
``greenq.control``'s. Nothing below imports this module back: task, results, producer and
control reach the app through small Protocols.
The task registry (``@app.task``, ``base=``, ``shared_task``) is ``greenq.registry``'s, inherited.
Imports: config, control, exceptions, message, producer, registry, results, routing, schedules, task;
lazily: the
broker, ``greenq.embedded``, ``greenq.task_redis``, ``greenq.aio`` (the asyncio transport, for
the ``a*`` methods) and ``greenq.contrib.django`` (``on_commit``, ``autodiscover_tasks``), so
neither redis.asyncio nor Django is imported unless used.
"""

from __future__ import annotations

import importlib
import os
import runpy
import types
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from greenq import config, signals
from greenq.config import Layer, Settings
from greenq.config_object import settings_from_object
from greenq.control import Control
from greenq.exceptions import ConfigError
from greenq.message import Message
from greenq.producer import Producer
from greenq.registry import TaskRegistry
from greenq.results import AsyncResult
from greenq.routing import validate_routes
from greenq.schedules import Schedule, build_schedules
from greenq.schedules import periodic as periodic_decorator
from greenq.task import STARMAP_TASK, Task, starmap_task

if TYPE_CHECKING:
    from greenq.aio import AsyncRedisBroker
    from greenq.broker.redis import RedisBroker

TaskCall = tuple[str | Task, Sequence[Any] | None, Mapping[str, Any] | None]
# aenqueue_many builds this many messages between yields to the event loop (a few ms of work).
ASYNC_BUILD_SLICE = 250


class GreenQ(TaskRegistry):
    """A greenq application.

    Args:
        name: the app's name, shown in logs and ``greenq status``.
        broker: Redis URL; same as the ``broker_url`` setting. None (and no setting anywhere)
            means the embedded redis-server under ``./.greenq``.
        **settings: any setting from ``greenq.config.Settings``; unknown names raise ``ConfigError``.
    """

    def __init__(self, name: str = "greenq", broker: str | None = None, **settings: Any) -> None:
        self.name = name
        self._tasks: dict[str, Task] = {STARMAP_TASK: starmap_task(self)}  # Task.chunks runs it
        self._discovery: list[tuple[Sequence[str] | None, str]] = []
        self._discovering = False
        self._periodic: list[Schedule] = []  # @app.periodic registrations, in order
        self._layers: list[Layer] = []
        self._overrides: list[Layer] = []
        self._settings: Settings | None = None
        self._producer = Producer(self)
        self._origin: dict[str, str] = {}
        self._broker: RedisBroker | None = None
        self._task_redis: dict[tuple[str | None, int], Any] = {}
        # One asyncio transport per event loop: redis.asyncio connections belong to the loop
        # that opened them (asyncio.run() twice means two loops).
        self._async_brokers: weakref.WeakKeyDictionary[Any, AsyncRedisBroker] = weakref.WeakKeyDictionary()
        code = dict(settings)
        if broker is not None:
            code["broker_url"] = broker
        if code:
            self._add_layer(self._layers, ("GreenQ(...) arguments", code))

    def __repr__(self) -> str:
        return f"<GreenQ {self.name}>"

    # ---- configuration ---------------------------------------------------------------

    def _add_layer(self, target: list[Layer], layer: Layer) -> None:
        source, mapping = layer
        for key, value in mapping.items():
            config.coerce(key, value, source)  # fail at the line that configured it
        if "task_routes" in mapping:
            validate_routes(config.coerce("task_routes", mapping["task_routes"], source))
        target.append(layer)
        self._settings = None
        self._broker = None
        self._async_brokers = weakref.WeakKeyDictionary()

    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Load settings from an object, a mapping, ``"pkg.module"``, ``"pkg.module:attr"`` or a
        ``path/to/file.py``. Later calls override earlier ones; environment variables and
        command-line flags still win.

        Raises:
            ConfigError: unknown setting (with a suggestion), wrong type, or unloadable source.
        """
        source, target = self._load_source(obj)
        self._add_layer(self._layers, (source, settings_from_object(target, namespace)))

    @staticmethod
    def _load_source(obj: Any) -> tuple[str, Any]:
        if not isinstance(obj, str):
            return f"config {getattr(obj, '__name__', type(obj).__name__)}", obj
        if obj.endswith(".py") or os.sep in obj:
            if not os.path.isfile(obj):
                raise ConfigError(f"config file {obj!r} does not exist")
            module = types.ModuleType(os.path.basename(obj)[:-3])
            module.__dict__.update({k: v for k, v in runpy.run_path(obj).items() if not k.startswith("__")})
            return obj, module
        module_name, _, attribute = obj.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import config module {module_name!r}: {exc}") from exc
        return obj, getattr(module, attribute) if attribute else module

    def override(self, settings: Mapping[str, Any], source: str = "command line") -> None:
        """Settings that beat every other source (used by the CLI for its flags)."""
        self._add_layer(self._overrides, (source, dict(settings)))

    def _build(self) -> Settings:
        env = config.from_env()
        layers = [*self._layers, ("environment", env), *self._overrides]
        self._settings, self._origin = config.build_settings(layers)
        validate_routes(self._settings.task_routes)
        return self._settings

    @property
    def conf(self) -> Settings:
        """The effective settings (defaults < code < environment < command line)."""
        return self._settings if self._settings is not None else self._build()

    @property
    def conf_origin(self) -> dict[str, str]:
        """Where each effective setting came from."""
        self.conf  # noqa: B018 - builds settings and origins
        return dict(self._origin)

    # ---- broker ----------------------------------------------------------------------

    def broker_url(self) -> str:
        """The configured broker URL, or the embedded server's (started if needed)."""
        url = self.conf.broker_url
        if url:
            return url
        from greenq.embedded import EmbeddedRedis

        return EmbeddedRedis().ensure_running()

    @property
    def broker(self) -> RedisBroker:
        """The Redis broker, built on first use (no connection is made until a command runs)."""
        if self._broker is None:
            from greenq.broker.redis import RedisBroker

            conf = self.conf
            self._broker = RedisBroker(
                self.broker_url(),
                connect_timeout_s=conf.broker_connect_timeout,
                socket_timeout_s=conf.broker_socket_timeout,
                dead_letter_max=conf.dead_letter_max,
                pool_limit=conf.broker_pool_limit,
                queue_shards=conf.queue_shards,
                key_prefix=conf.key_prefix,
            )
        return self._broker

    @property
    def redis(self) -> Any:
        """A Redis client for task bodies, on the broker's server: one per process, shared.

        Its pool (``greenq.task_redis``: a lean ``BlockingConnectionPool``) is sized for the
        worker, at most 50 connections: measured here, 50 connections shared by 500 greenlets
        beat one connection per greenlet. A task waits for a free connection instead of failing
        with "Too many connections". Rebuilt after a fork.
        """
        return self.redis_for(None)

    def redis_for(self, url: str | None) -> Any:
        """Like ``app.redis``, on another server (``url``); None means the broker's."""
        from greenq.task_redis import task_client

        key = (url, os.getpid())
        client = self._task_redis.get(key)
        if client is None:
            conf = self.conf
            size = min(50, conf.worker_concurrency or 50)
            client = self._task_redis[key] = task_client(
                url or self.broker_url(), size, conf.broker_socket_timeout, conf.broker_connect_timeout
            )
        return client

    def close(self) -> None:
        """Drop broker connections (a new broker is built on next use)."""
        if self._broker is not None:
            self._broker.client.close()
            self._broker.conns.close()
            self._broker = None
        self._async_brokers = weakref.WeakKeyDictionary()

    @property
    def async_broker(self) -> AsyncRedisBroker:
        """The asyncio transport of the running event loop, built on first use there.

        Raises:
            RuntimeError: called outside a running event loop.
        """
        import asyncio

        loop = asyncio.get_running_loop()
        found = self._async_brokers.get(loop)
        if found is None:
            from greenq.aio import AsyncRedisBroker

            # A transport's connections keep its loop alive: drop those of loops that are gone.
            for old in [old for old in self._async_brokers if old.is_closed()]:
                del self._async_brokers[old]
            found = self._async_brokers[loop] = AsyncRedisBroker(self.broker)
        return found

    async def aclose(self) -> None:
        """Close the running event loop's Redis connections (a new transport is built on next use)."""
        import asyncio

        found = self._async_brokers.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found.aclose()

    # ---- tasks: @app.task, app.tasks, autodiscover_tasks (greenq.registry.TaskRegistry) ----

    # The decorator lives with the schedule model: @app.periodic(every=30) or (cron=..., tz=...).
    periodic = periodic_decorator

    def schedules(self) -> list[Schedule]:
        """Every schedule (``beat_schedule``, ``@app.periodic``), checked; ConfigError names a bad one."""
        conf = self.conf
        return build_schedules(conf.beat_schedule or {}, self._periodic, self.tasks, conf.timezone)

    def build_message(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> tuple[Message, bytes]:
        """Route, validate and encode one call; nothing is sent. Takes and raises what
        ``apply_async`` does (``greenq.producer.Producer.build``)."""
        return self._producer.build(name, args, kwargs, **options)

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        on_commit: bool | str = False,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue a task by name; it need not be registered in this process.

        Takes the options of ``Task.apply_async``, ``on_commit`` included.
        """
        message, body = self._producer.build(name, args, kwargs, **options)
        return AsyncResult(self._send([(message, body)], on_commit)[0], app=self)

    def enqueue_many(
        self, calls: Iterable[TaskCall], *, on_commit: bool | str = False, **options: Any
    ) -> list[AsyncResult]:
        """Enqueue many calls pipelined, thousands per round trip.

        Args:
            calls: ``(task or name, args, kwargs)`` tuples.
            on_commit: as in ``Task.apply_async``: send all of them when the Django transaction
                commits, none if it rolls back.
            **options: ``apply_async`` options applied to every call (queue, priority, countdown...).

        Every call is validated and encoded before anything is sent, so a bad argument in
        call 9,000 enqueues nothing.
        """
        build = self._producer.build
        items = [
            build(task.name if isinstance(task, Task) else task, args, kwargs, **options)
            for task, args, kwargs in calls
        ]
        ids = self._send(items, on_commit) if items else []
        return [AsyncResult(task_id, app=self) for task_id in ids]

    def _send(self, items: list[tuple[Message, bytes]], on_commit: bool | str) -> list[str]:
        """Enqueue now (the ids: a unique call's may be the task holding its key) or on commit."""
        if not on_commit:
            return self._enqueue(items)
        from greenq.contrib.django import on_commit as register

        if any(message.unique is not None for message, _ in items):  # its holder is known only later
            raise ConfigError("unique enqueue cannot wait for on_commit: send it after the commit")
        # NOTE: built (validated) now, sent at commit: a bad argument raises inside the transaction.
        register(lambda: self._enqueue(items), using=on_commit if isinstance(on_commit, str) else None)
        return [message.id for message, _ in items]

    def _enqueue(self, items: list[tuple[Message, bytes]]) -> list[str]:
        ids = self.broker.enqueue(items)
        if signals.after_task_publish.receivers:
            signals.published(items, ids)  # not for a unique message whose key another task held
        return ids

    # ---- asyncio producer (greenq.aio: redis.asyncio, never gevent) ------------------------

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``send_task`` for asyncio code: the same message, routing, validation and errors; the
        round trip is awaited on ``redis.asyncio`` instead of blocking the event loop.

        Concurrent calls from one loop share round trips: calls made while one is in flight go
        together in the next pipeline, so ``asyncio.gather`` of thousands costs a few round trips.
        """
        message, body = self._producer.build(name, args, kwargs, **options)
        await self.async_broker.enqueue([(message, body)])
        if signals.after_task_publish.receivers:
            signals.published([(message, body)])
        return AsyncResult(message.id, app=self)

    async def aenqueue_many(self, calls: Iterable[TaskCall], **options: Any) -> list[AsyncResult]:
        """``enqueue_many`` for asyncio code: all calls are validated first (a bad one sends
        nothing), yielding to the loop every few hundred, then sent pipelined."""
        import asyncio

        items: list[tuple[Message, bytes]] = []
        for count, (task, args, kwargs) in enumerate(calls, 1):
            items.append(
                self._producer.build(task.name if isinstance(task, Task) else task, args, kwargs, **options)
            )
            if count % ASYNC_BUILD_SLICE == 0:
                await asyncio.sleep(0)
        if items:
            await self.async_broker.enqueue(items)
            if signals.after_task_publish.receivers:
                signals.published(items)
        return [AsyncResult(message.id, app=self) for message, _ in items]

    @property
    def control(self) -> Control:
        """Operations on tasks already sent: ``app.control.revoke(task_id)``."""
        return Control(self)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """A handle on a task's result by id."""
        return AsyncResult(task_id, app=self)
