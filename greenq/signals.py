"""Signals: Celery's hooks under Celery's names, so a receiver ports with an import change.

``@task_prerun.connect`` or ``task_failure.connect(fn, sender=add)``; ``send`` calls every
receiver with ``sender`` and keyword arguments (docs/integrations.md lists each signal's). A
receiver that raises is logged and skipped: it never changes a task's outcome or stops a worker.

NOTE: module-level, as Celery's are (receivers connect at import, before any app exists); the
one exception to "no mutable module globals". Call sites on the hot path test a plain attribute
first (``if task_prerun.receivers:`` or a ``Switch``) and build no arguments when nobody listens,
so an unconnected signal costs one attribute read per task.
Imports: stdlib only (every layer may import it).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Switch:
    """True while any of its signals has a receiver: one attribute read for a group of signals."""

    __slots__ = ("on", "signals")

    def __init__(self) -> None:
        self.on = False
        self.signals: list[Signal] = []

    def update(self) -> None:
        self.on = any(signal.receivers for signal in self.signals)


def _sender_key(sender: Any) -> Any:
    """Tasks match by name, so ``sender=add`` also matches a signal sent with ``"proj.add"``."""
    if sender is None or isinstance(sender, str):
        return sender
    name = getattr(sender, "name", None)
    if isinstance(name, str) and hasattr(sender, "apply_async"):
        return name
    return id(sender)


class Signal:
    """A named hook with Celery's ``connect``/``disconnect``/``send``.

    Args:
        name: the signal's name, as in Celery (logs name it).
        providing_args: the keyword arguments ``send`` passes besides ``sender`` (documentation).
        switch: a group flag the hot path reads instead of each signal's receivers.
    """

    def __init__(self, name: str, providing_args: tuple[str, ...] = (), switch: Switch | None = None) -> None:
        self.name = name
        self.providing_args = providing_args
        # (receiver, sender key or _ANY); read by call sites as the "anyone listening?" flag.
        self.receivers: list[tuple[Receiver, Any]] = []
        self._switch = switch
        self._uids: set[str] = set()
        self._filtered = False  # any receiver with a sender filter: only then is a sender's key read
        if switch is not None:
            switch.signals.append(self)

    def __repr__(self) -> str:
        return f"<Signal {self.name}: {len(self.receivers)} receivers>"

    def connect(
        self,
        receiver: Receiver | None = None,
        *,
        sender: Any = None,
        weak: bool = False,
        dispatch_uid: str | None = None,
    ) -> Any:
        """Connect ``receiver`` (or decorate: ``@sig.connect`` / ``@sig.connect(sender=task)``).

        ``sender``: only sends from this sender (a task, or a task name) reach the receiver.
        ``dispatch_uid``: connecting again with the same uid is a no-op (a module imported twice).
        Receivers are held strongly (``weak=True`` is refused: a weakly held lambda vanishes).
        """
        if weak:
            raise ValueError("greenq signals hold receivers strongly; weak=True is not supported")

        def add(fn: Receiver) -> Receiver:
            key = _ANY if sender is None else _sender_key(sender)
            if dispatch_uid is not None:
                if dispatch_uid in self._uids:
                    return fn
                self._uids.add(dispatch_uid)
            if not any(r is fn and k == key for r, k in self.receivers):
                self.receivers = [*self.receivers, (fn, key)]  # copy: send() may be iterating
                self._filtered = any(k is not _ANY for _, k in self.receivers)
                if self._switch is not None:
                    self._switch.update()
            return fn

        return add(receiver) if receiver is not None else add

    def disconnect(self, receiver: Receiver, sender: Any = None) -> bool:
        """Remove ``receiver`` (for ``sender`` only, if given); True if it was connected."""
        key = None if sender is None else _sender_key(sender)
        kept = [(r, k) for r, k in self.receivers if not (r is receiver and (key is None or k == key))]
        found = len(kept) != len(self.receivers)
        self.receivers = kept
        self._filtered = any(k is not _ANY for _, k in kept)
        if self._switch is not None:
            self._switch.update()
        return found

    def send(self, sender: Any = None, **kwargs: Any) -> list[tuple[Receiver, Any]]:
        """Call the receivers; returns ``(receiver, its return value or the exception it raised)``.

        A receiver that raises is logged with its traceback and the others still run.
        """
        receivers = self.receivers
        if not receivers:
            return []
        key = _sender_key(sender) if self._filtered else None
        replies: list[tuple[Receiver, Any]] = []
        for receiver, wanted in receivers:
            if wanted is not _ANY and wanted != key:
                continue
            try:
                replies.append((receiver, receiver(signal=self, sender=sender, **kwargs)))
            except Exception as exc:
                logger.exception(
                    "signal %s: receiver %s raised %s (ignored)", self.name, _describe(receiver), exc
                )
                replies.append((receiver, exc))
        return replies

    send_robust = send  # Celery's name: greenq's send is always robust


def _describe(fn: Receiver) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class _Any:
    def __repr__(self) -> str:
        return "<any sender>"


_ANY = _Any()


class ExceptionInfo:
    """Celery's ``einfo``: the exception, its type, traceback object and formatted text."""

    def __init__(self, exc: BaseException | None = None) -> None:
        if exc is None:
            found = sys.exc_info()[1]
            if found is None:
                raise ValueError("ExceptionInfo() outside an except block needs the exception")
            exc = found
        self.exception = exc
        self.type: type[BaseException] = type(exc)
        self.tb: TracebackType | None = exc.__traceback__
        self.traceback = "".join(traceback.format_exception(self.type, exc, self.tb))

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.type.__name__}: {self.exception}>"


# The headers greenq fills in; a ``before_task_publish`` receiver's other keys travel with the task.
STANDARD_HEADERS = ("lang", "id", "task", "root_id", "retries", "eta", "expires")


def publish_arguments(message: Any, before: bool) -> dict[str, Any]:
    """Celery's keyword arguments of ``before_task_publish`` (``before``) or
    ``after_task_publish`` for a ``greenq.message.Message``: ``body`` is protocol 2's
    ``(args, kwargs, embed)``, ``headers`` has ``id``, ``task``, ``retries``, ``eta``, ``expires``
    and the message's own headers (``traceparent``...); ``exchange`` is empty, ``routing_key``
    the queue."""
    headers = {
        "lang": "py",
        "id": message.id,
        "task": message.task,
        "root_id": message.id,
        "retries": message.retries,
        "eta": message.eta,
        "expires": message.expires,
        **(message.headers or {}),
    }
    found: dict[str, Any] = {
        "body": (list(message.args), dict(message.kwargs), {}),
        "exchange": "",
        "routing_key": message.queue,
        "headers": headers,
    }
    if before:
        found.update(properties={"priority": message.priority}, declare=[], retry_policy=None)
    return found


def before_publish(message: Any) -> Any:
    """Send ``before_task_publish``; keys the receivers added to ``headers`` go into the message
    (``task.request.<key>`` in the worker, as in Celery). Returns the message to encode."""
    arguments = publish_arguments(message, True)
    headers = arguments["headers"]
    before_task_publish.send(sender=message.task, **arguments)
    extra = {k: v for k, v in headers.items() if k not in STANDARD_HEADERS}
    if extra == (message.headers or {}):
        return message
    return message.with_changes(headers=extra or None)


def published(messages: Any, ids: Sequence[str] | None = None) -> None:
    """Send ``after_task_publish`` for each ``(message, body)`` just written to Redis, in the
    process that wrote it (a producer; a worker for what its tasks start). ``ids``: what the
    enqueue returned; a unique message whose key another task held has that task's id there
    (nothing was written for it) and is left out."""
    for index, (message, _) in enumerate(messages):
        if ids is None or ids[index] == message.id:
            after_task_publish.send(sender=message.task, **publish_arguments(message, False))


# ---- the signals ------------------------------------------------------------------------

# Read by the executor: any receiver on a task-run signal takes the (slower) hooked path.
TASK_RUN = Switch()

before_task_publish = Signal(
    "before_task_publish",
    ("body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"),
)
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key"))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"), TASK_RUN)
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"), TASK_RUN)
task_success = Signal("task_success", ("result",), TASK_RUN)
task_failure = Signal(
    "task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo"), TASK_RUN
)
task_retry = Signal("task_retry", ("request", "reason", "einfo"), TASK_RUN)
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_rejected = Signal("task_rejected", ("message", "exc"))
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_process_init = Signal("worker_process_init")
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")

# Every signal by name (docs, ``greenq check-celery-config``).
ALL: dict[str, Signal] = {
    s.name: s
    for s in (
        before_task_publish,
        after_task_publish,
        task_prerun,
        task_postrun,
        task_success,
        task_failure,
        task_retry,
        task_revoked,
        task_rejected,
        worker_init,
        worker_ready,
        worker_process_init,
        worker_shutdown,
        heartbeat_sent,
    )
}
