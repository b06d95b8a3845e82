"""Every public greenq error, under one base class.

Owns the error tree only; imports nothing from greenq, so any layer may raise these.
Redis, gevent and OS errors never cross a layer: they are re-raised as one of these
with ``raise ... from exc``.
"""

from __future__ import annotations


class GreenqError(Exception):
    """Base class of every error greenq raises on purpose."""


class ConfigError(GreenqError, ValueError):
    """A setting is unknown, has the wrong type, or cannot be loaded."""


class EncodeError(GreenqError, TypeError):
    """A task's arguments or result cannot be turned into a message.

    Raised at enqueue, before anything reaches Redis; the message names the argument.
    """


class MessageTooLarge(EncodeError):
    """An encoded message is bigger than ``max_message_bytes``."""


class ResultTooLarge(EncodeError):
    """A task's encoded result is bigger than ``result_max_bytes``: it fails instead."""


class DecodeError(GreenqError):
    """Bytes from Redis are not a valid greenq message (bad JSON, envelope or signature)."""


class NotRegistered(GreenqError, KeyError):
    """No task with this name is registered in the app."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "task not registered"


class BrokerError(GreenqError):
    """Talking to the broker failed."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached (refused, timed out, DNS, auth). The URL is masked."""


class TaskError(GreenqError):
    """A task finished in FAILURE; ``get()`` raises this with the remote details.

    Attributes:
        task_id: the failed task's id.
        exc_type: the exception's class name as raised in the worker.
        exc_message: ``str()`` of the exception.
        traceback: the formatted traceback from the worker.
    """

    def __init__(self, task_id: str, exc_type: str, exc_message: str, traceback: str | None = None) -> None:
        super().__init__(f"task {task_id} failed: {exc_type}: {exc_message}")
        self.task_id = task_id
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback


class TaskRevoked(TaskError):
    """The task was revoked or expired before it ran; ``get()`` raises this."""


class Retry(GreenqError):
    """Raised by ``self.retry()``; the worker turns it into state RETRY and a delayed message."""

    def __init__(self, exc: BaseException | None = None, countdown_s: float | None = None) -> None:
        super().__init__(f"retry in {countdown_s}s" if countdown_s is not None else "retry")
        self.exc = exc
        self.countdown_s = countdown_s


class TimeLimitExceeded(GreenqError):
    """The task ran past its hard ``time_limit`` and was stopped; its result records this type.

    A task never sees it: a prefork child is killed, and a gevent task is interrupted with a
    private BaseException that ``except Exception:`` cannot swallow.
    """


class SoftTimeLimitExceeded(GreenqError):
    """Raised inside a task that ran past its ``soft_time_limit``; the task may catch it."""


class WorkerLostError(GreenqError):
    """The process running the task died before the task finished."""


class ResultTimeout(GreenqError, TimeoutError):
    """``AsyncResult.get(timeout=)`` ran out before the task finished; the message names the id."""
