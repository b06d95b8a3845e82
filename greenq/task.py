"""Task: a function plus its options, and the calls that enqueue it through its app.

Owns the per-execution ``request`` context, ``retry()`` and Celery's handlers (``on_failure``...,
overridden by subclasses); the options table is ``greenq.task_options``'s. Every way to enqueue (``delay``,
``delay_on_commit``, ``adelay``, ``map``...) goes through the app's ``send_task`` family and
ends in ``greenq.producer.Producer.build``.
Imports: message, exceptions, task_options; ``results`` for a type. The app is reached through the task's
``app`` attribute, typed by the ``TaskApp`` Protocol below, never imported (no import cycle).
"""

from __future__ import annotations

import contextvars
import inspect
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from greenq.exceptions import Retry
from greenq.message import now
from greenq.task_options import OPTION_NAMES as OPTION_NAMES  # re-exported for older imports
from greenq.task_options import TaskOptions as TaskOptions
from greenq.task_options import check_priority as check_priority
from greenq.task_options import make_options as make_options
from greenq.task_options import to_epoch as to_epoch

if TYPE_CHECKING:
    from greenq.canvas import Signature, group
    from greenq.results import AsyncResult


class TaskApp(Protocol):
    """The app calls a Task makes to enqueue itself; a ``GreenQ`` satisfies it."""

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        on_commit: bool | str = False,
        **options: Any,
    ) -> AsyncResult: ...

    def enqueue_many(
        self, calls: Iterable[Any], *, on_commit: bool | str = False, **options: Any
    ) -> list[AsyncResult]: ...

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult: ...

    async def aenqueue_many(self, calls: Iterable[Any], **options: Any) -> list[AsyncResult]: ...


@dataclass(frozen=True)
class Request:
    """What a running task knows about its own call (``self.request`` with ``bind=True``)."""

    id: str | None = None
    task: str | None = None
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    deliveries: int = 1
    eta: float | None = None
    expires: float | None = None
    queue: str | None = None
    priority: int = 0
    worker: str | None = None
    headers: dict[str, Any] | None = None  # the message's headers (traceparent, receivers' own)

    def __getattr__(self, name: str) -> Any:
        """A header as an attribute, as in Celery: ``self.request.request_id``."""
        headers = self.__dict__.get("headers") or {}
        if name in headers:
            return headers[name]
        raise AttributeError(f"Request has no attribute or header {name!r}")


# The running call's request fields; a ``Request`` is built from them only when a task asks.
_current_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "greenq_request", default=None
)
_NO_REQUEST = Request()


def set_request(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    """Called by the executor around a task body (per greenlet, thread or child process) with
    the ``Request`` fields of the call."""
    return _current_request.set(fields)


def reset_request(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _current_request.reset(token)


def _positional_range(signature: inspect.Signature | None, bind: bool) -> tuple[int, int] | None:
    """(fewest, most) positional arguments a call may pass when it passes no keywords; None when
    the signature has keyword-only parameters without defaults (only ``bind()`` can tell)."""
    if signature is None:
        return None
    low = high = 0
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            high += 1
            low += parameter.default is parameter.empty
        elif parameter.kind is parameter.VAR_POSITIONAL:
            high = 1 << 30
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            return None
    skip = 1 if bind else 0  # ``self`` is passed by the worker, not by the caller
    return max(0, low - skip), max(0, high - skip)


HANDLERS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


STARMAP_TASK = "greenq.starmap"  # the builtin task behind ``chunks`` (every app registers it)


class Task:
    """A registered task. Calling it runs the function here; ``delay()`` sends it to a worker.

    Subclass it (``class Audited(app.Task)``, then ``@app.task(base=Audited)``) for Celery's
    handlers below, called in the worker around each run; one that raises is logged and does not
    change the outcome. Class attributes named like task options (``autoretry_for = (IOError,)``)
    are defaults for every task built on the class.
    """

    def __init__(self, app: TaskApp, fn: Callable[..., Any], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._signature = inspect.signature(fn) if options.typing else None
        self._positional = _positional_range(self._signature, options.bind)
        # Read by the executor on every run: False keeps it on the path without handler calls.
        self.hooked = any(getattr(type(self), h) is not getattr(Task, h) for h in HANDLERS)
        # What the executor calls: the function, unless a bound task or an overridden __call__.
        plain = not options.bind and type(self).__call__ is Task.__call__
        self.body: Callable[..., Any] | None = fn if plain else None

    # ---- Celery's handlers: no-ops here, overridden by subclasses ----------------------------

    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Before the body runs (after ``task_prerun``)."""

    def on_success(self, retval: Any, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """The body returned ``retval`` (before ``task_success``)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        """The body raised ``exc`` and the task failed (``einfo``: ``greenq.signals.ExceptionInfo``)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        """The run ended in a retry because of ``exc`` (the original error, as in Celery)."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """After every run: ``status`` is the state, ``retval`` the result or the exception."""

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.options.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    @property
    def request(self) -> Request:
        """The current call's request inside a worker; an empty Request elsewhere."""
        fields = _current_request.get()
        return _NO_REQUEST if fields is None else Request(**fields)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Mapping[str, Any] | None = None
    ) -> bool:
        """Celery's: record a custom state for this run (or ``task_id``), e.g.
        ``self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})``. Readers see it as
        ``AsyncResult.state`` / ``.info`` and in ``iter_updates()``. Never overwrites a final
        state; returns whether it was written."""
        from greenq.message import result_payload

        fields = _current_request.get() or {}
        task_id = task_id or fields.get("id")
        if not task_id:
            raise ValueError(f"{self.name}.update_state(): no task_id outside a running task")
        record = result_payload(
            task_id,
            self.name,
            state or "PROGRESS",
            retries=int(fields.get("retries") or 0),
            worker=fields.get("worker"),
            extra={"meta": dict(meta or {})},
        )
        app: Any = self.app
        return bool(app.broker.store_progress(task_id, record, int(app.conf.result_expires * 1000)))

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` at enqueue if the function could not take these arguments."""
        if self._signature is None:
            return
        if not kwargs and self._positional is not None:
            low, high = self._positional
            if low <= len(args) <= high:
                return  # the common call, checked without binding the signature (much cheaper)
        try:
            if self.options.bind:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue with default options; returns an AsyncResult at once."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue when the current Django transaction (default database) commits; never if it
        rolls back. Outside ``transaction.atomic()`` it enqueues at once.

        Same as ``apply_async(args, kwargs, on_commit=True)``: the worker cannot run before the
        rows this transaction writes are visible. The returned AsyncResult's id is final; it
        stays PENDING for ever if the transaction rolls back.
        """
        return self.apply_async(args, kwargs, on_commit=True)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
        unique: bool = False,
        on_commit: bool | str = False,
        link: Any = None,
        link_error: Any = None,
        shard_key: str | None = None,
    ) -> AsyncResult:
        """Enqueue one call.

        Args:
            queue: overrides the task's queue and ``task_routes``.
            priority: 0 (lowest, the default) to 9; higher is fetched first within a queue.
            countdown: run no sooner than this many seconds from now.
            eta: run no sooner than this time (datetime, naive = UTC, or epoch seconds).
            expires: seconds from now, or a time, after which the task is not run (REVOKED).
            task_id: use this id instead of a fresh one.
            unique: with ``task_id``: enqueue nothing while a task with this id waits, is
                reserved or runs, and return that task's AsyncResult instead (the key is freed
                when it finishes, or after the task's ``unique_for`` or the ``task_unique_ttl``
                setting, in seconds). A task with ``unique_for`` is always unique, keyed by its
                name and arguments. See docs/semantics.md, "Unique enqueue".
            shard_key: on a sharded queue (``queue_shards``), calls with one key go to one shard
                (in order); without one, a unique call's key decides, else round robin.
            link / link_error: a signature (or list) run with the result when the task succeeds,
                or with ``(task_id, error)`` once when it fails for good (docs/workflows.md).
            on_commit: True: send when the Django transaction of the default database commits
                (``django.db.transaction.on_commit``), nothing if it rolls back; a string: the
                transaction of that database alias. The message is validated and encoded now
                (errors raise here), so ``countdown`` counts from this call.

        Raises:
            EncodeError: an argument JSON cannot carry as it is (NaN, a datetime, a UUID...);
                the message names where it is and what to send instead (docs/protocol.md).
            MessageTooLarge: the message is over ``max_message_bytes``.
            BrokerUnavailable: Redis cannot be reached within the connect/socket timeout
                (with ``on_commit``: raised from the commit, after the data is committed).
            ConfigError: ``on_commit`` without Django installed.
        """
        if link is not None or link_error is not None:
            if on_commit or unique:
                raise ValueError(f"{self.name}: link/link_error cannot be combined with on_commit or unique")
            options = {"queue": queue, "priority": priority, "countdown": countdown, "eta": eta}
            options.update(
                expires=expires, task_id=task_id, link=link, link_error=link_error, shard_key=shard_key
            )
            given = {k: v for k, v in options.items() if v is not None}
            result: AsyncResult = self.signature(args, kwargs, **given).apply_async()
            return result
        return self.app.send_task(
            self.name,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            task_id=task_id,
            unique=unique,
            on_commit=on_commit,
            **({"shard_key": shard_key} if shard_key is not None else {}),
        )

    def map(self, arg_tuples: Iterable[Sequence[Any]], **options: Any) -> list[AsyncResult]:
        """Enqueue one call per argument tuple, pipelined (thousands per round trip)."""
        return self.app.enqueue_many(((self.name, tuple(a), None) for a in arg_tuples), **options)

    # ---- canvas (greenq.canvas, docs/workflows.md) ------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this call: ``add.s(2)``; arguments given when it is sent go first."""
        from greenq.canvas import Signature

        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: arguments given when it is sent are ignored."""
        from greenq.canvas import Signature

        return Signature(self, args, kwargs, immutable=True)

    def signature(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A signature with options: ``add.signature((2, 3), queue="math", immutable=True)``."""
        from greenq.canvas import Signature

        immutable = bool(options.pop("immutable", False))
        return Signature(self, args, kwargs, options, immutable)

    subtask = signature

    def starmap(self, arg_tuples: Iterable[Sequence[Any]]) -> group:
        """A group of one call per argument tuple (apply it to send them all in one batch)."""
        from greenq.canvas import group

        return group(self.s(*a) for a in arg_tuples)

    def chunks(self, arg_tuples: Iterable[Sequence[Any]], n: int) -> group:
        """A group of ``ceil(len / n)`` tasks, each running this task over ``n`` argument tuples
        in one worker (the builtin ``greenq.starmap``); its result per chunk is the list of
        return values. Apply it: ``add.chunks(pairs, 100)()`` (a ``GroupResult``)."""
        from greenq.canvas import Signature, group

        if n < 1:
            raise ValueError(f"{self.name}.chunks(): n must be at least 1, got {n}")
        items = [list(a) for a in arg_tuples]
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group(Signature(STARMAP_TASK, (self.name, part), app=self.app) for part in parts)

    # ---- asyncio: the same calls, awaited on redis.asyncio (greenq.aio) --------------------

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for asyncio code; the event loop keeps running during the round trip."""
        return await self.app.asend_task(self.name, args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        expires: datetime | float | None = None,
        task_id: str | None = None,
    ) -> AsyncResult:
        """``apply_async`` for asyncio code: same options, same errors, awaited."""
        return await self.app.asend_task(
            self.name,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
            task_id=task_id,
        )

    async def amap(self, arg_tuples: Iterable[Sequence[Any]], **options: Any) -> list[AsyncResult]:
        """``map`` for asyncio code (``app.aenqueue_many``)."""
        return await self.app.aenqueue_many(((self.name, tuple(a), None) for a in arg_tuples), **options)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        max_retries: int | None = -1,
    ) -> Retry:
        """Ask the worker to run this call again later; use as ``raise self.retry(exc=exc)``.

        Past ``max_retries`` it raises ``exc`` itself (the task fails with the original error).
        ``max_retries=None`` retries forever; the default -1 means the task's option.
        """
        request = self.request
        limit = self.options.max_retries if max_retries == -1 else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise RuntimeError(f"{self.name}: max_retries={limit} exceeded")
        if eta is not None:
            delay = max(0.0, (to_epoch(eta) or 0.0) - now())
        elif countdown is not None:
            delay = countdown
        else:
            delay = self.backoff_delay(request.retries)
        raise Retry(exc=exc, countdown_s=delay)

    def backoff_delay(self, retries: int) -> float:
        """Delay before retry number ``retries + 1``: ``retry_backoff`` (exponential, capped,
        optionally jittered) or ``default_retry_delay``."""
        backoff = self.options.retry_backoff
        if not backoff:
            return self.options.default_retry_delay
        base = 1.0 if backoff is True else float(backoff)
        delay = min(self.options.retry_backoff_max, base * (2**retries))
        return random.uniform(0, delay) if self.options.retry_jitter else delay


def starmap_task(app: TaskApp) -> Task:
    """The builtin ``greenq.starmap`` task behind ``Task.chunks``: one run calls a registered
    task once per argument tuple and returns the list of their results."""

    def starmap(self: Task, name: str, arg_tuples: list[list[Any]]) -> list[Any]:
        app: Any = self.app
        target: Task = app.tasks[name]
        return [target(*args) for args in arg_tuples]

    return Task(app, starmap, STARMAP_TASK, make_options({"name": STARMAP_TASK, "bind": True}, STARMAP_TASK))
