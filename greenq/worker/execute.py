"""Running one task body and turning whatever happens into an ``Outcome``.

The same function runs in a greenlet, inline (solo) or in a prefork child, so it takes only
the app and a picklable ``Job``. A task that raises, returns something that is not JSON, or
calls ``sys.exit()`` gives FAILURE; it never takes the worker down. Also builds the outcome
records the consumer writes for tasks that never ran (revoked, expired, abandoned).

Hooks (Celery's order): ``task_prerun``, ``before_start``, the body, then ``on_success`` +
``task_success``, ``on_retry`` + ``task_retry`` or ``on_failure`` + ``task_failure``, then
``after_return`` and ``task_postrun``; the consumer span (``greenq.tracing``) wraps them all.
A run with no handler, no receiver and no tracer takes ``execute``'s plain path, which reads
three flags and calls none of them. Imports: message (result records), task (request context),
signals, tracing, logs, pools.base, worker.admission, and loader in prefork children; no Redis.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from greenq import signals, tracing
from greenq.exceptions import ResultTooLarge, Retry, TaskRevoked
from greenq.limits import deadline_of, reset_deadline, set_deadline
from greenq.message import FAILURE, RETRY, REVOKED, SUCCESS, result_payload
from greenq.pools.base import Job, Outcome
from greenq.signals import TASK_RUN, ExceptionInfo
from greenq.task import Request, reset_request, set_request
from greenq.worker.admission import setting

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.task import Task

logger = logging.getLogger(__name__)
# ``tracing.active()`` inlined on the hot path (an API without that global is always consulted).
_otel = tracing.API


# NOTE: redis-py 8 caps a default pool at 100 connections; a gevent worker runs hundreds of
# tasks at once, so a module-level redis.Redis() in a task module fails with this.
POOL_EXHAUSTED = "Too many connections"
POOL_HINT = (
    " [greenq: this worker runs more tasks at once than the task's Redis client has connections"
    " (redis-py's default pool holds 100); use app.redis, which is sized for the worker, or"
    " redis.BlockingConnectionPool(max_connections=...) — see docs/http-tasks.md]"
)


def _describe(exc: BaseException) -> str:
    """The exception's message, with one sentence of help for an exhausted Redis client pool."""
    text = str(exc)
    if POOL_EXHAUSTED in text and type(exc).__name__ in ("MaxConnectionsError", "ConnectionError"):
        return text + POOL_HINT
    return text


def _failure(task: Task, job: Job, exc: BaseException, ignore: bool, worker: str | None) -> Outcome:
    name = type(exc).__name__
    text = _describe(exc)
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if text.endswith(POOL_HINT):
        trace += POOL_HINT.strip() + "\n"
    payload = (
        None
        if ignore
        else result_payload(
            str(job.request["id"]),
            task.name,
            FAILURE,
            exc_type=name,
            exc_message=text,
            traceback=trace,
            retries=int(job.request.get("retries", 0)),
            worker=worker,
        )
    )
    return Outcome(FAILURE, payload, error=f"{name}: {text}")


def _retry(task: Task, job: Job, exc: BaseException | None, delay_s: float, worker: str | None) -> Outcome:
    name = type(exc).__name__ if exc else "Retry"
    text = str(exc) if exc else ""
    payload = result_payload(
        str(job.request["id"]),
        task.name,
        RETRY,
        exc_type=name,
        exc_message=text,
        retries=int(job.request.get("retries", 0)),
        worker=worker,
    )
    return Outcome(RETRY, payload, retry_in_s=delay_s, error=f"{name}: {text}")


def execute(app: GreenQ, job: Job) -> Outcome:
    """Run ``job`` with ``app``'s task registry; never raises (but lets GreenletExit through)."""
    task = app.tasks[job.task]
    if task.hooked or TASK_RUN.on or (_otel._TRACER_PROVIDER is not None if _otel else tracing.active()):
        return _execute_hooked(app, task, job)
    options = task.options
    conf = app.conf
    ignore = setting(task, conf, "ignore_result")
    worker = job.request.get("worker")
    token = set_request(job.request)
    started = time.perf_counter()
    try:
        try:
            # The function itself when ``Task.__call__`` would only forward to it (one call less).
            value = (task.body or task)(*job.args, **job.kwargs)
        except Retry as retry:
            outcome = _retry(task, job, retry.exc, retry.countdown_s or 0.0, worker)
        except options.autoretry_for as exc:
            outcome = _autoretry(task, job, exc, ignore, worker)
        except (Exception, SystemExit) as exc:
            outcome = _failure(task, job, exc, ignore, worker)
        else:
            outcome = _success(task, job, value, ignore, worker, conf.result_max_bytes)
    finally:
        reset_request(token)
    outcome.runtime_s = time.perf_counter() - started
    return outcome


def _execute_hooked(app: GreenQ, task: Task, job: Job) -> Outcome:
    """``execute`` with the task's handlers, the task signals and the consumer span."""
    options = task.options
    ignore = setting(task, app.conf, "ignore_result")
    worker = job.request.get("worker")
    task_id, args, kwargs = str(job.request["id"]), job.args, job.kwargs
    token = set_request(job.request)
    span = tracing.consume(task.name, job.request)
    started = time.perf_counter()
    outcome, value = Outcome(FAILURE), None
    error: BaseException | None = None
    try:
        if signals.task_prerun.receivers:
            signals.task_prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs=kwargs)
        try:
            if task.hooked:
                _guard(task, "before_start", task_id, args, kwargs)
            value = task(*args, **kwargs)
        except Retry as retry:
            error = retry
            outcome = _retry(task, job, retry.exc, retry.countdown_s or 0.0, worker)
        except options.autoretry_for as exc:
            error = exc
            outcome = _autoretry(task, job, exc, ignore, worker)
            if outcome.state == RETRY:  # as Celery's autoretry: the reason is a Retry
                error = Retry(exc=exc, countdown_s=outcome.retry_in_s)
                error.__traceback__ = exc.__traceback__
        except (Exception, SystemExit) as exc:
            error = exc
            outcome = _failure(task, job, exc, ignore, worker)
        else:
            outcome = _success(task, job, value, ignore, worker, app.conf.result_max_bytes)
            if outcome.state == FAILURE:  # the result was not JSON
                error = TypeError(outcome.error)
        value = _after_run(task, job, outcome, value, error)
    finally:
        outcome.runtime_s = time.perf_counter() - started
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                sender=task,
                task_id=task_id,
                task=task,
                args=args,
                kwargs=kwargs,
                retval=value,
                state=outcome.state,
            )
        if span is not None:
            span.end(outcome.state, error)
        reset_request(token)
    return outcome


def _after_run(task: Task, job: Job, outcome: Outcome, value: Any, error: BaseException | None) -> Any:
    """The handlers and signals of the run's end; returns what ``after_return`` and
    ``task_postrun`` get as ``retval`` (the exception, unless it succeeded)."""
    task_id, args, kwargs = str(job.request["id"]), job.args, job.kwargs
    state = outcome.state
    if state == SUCCESS:
        if task.hooked:
            _guard(task, "on_success", value, task_id, args, kwargs)
        if signals.task_success.receivers:
            signals.task_success.send(sender=task, result=value)
        einfo = None
    else:
        assert error is not None
        value, einfo = error, ExceptionInfo(error)
        if state == RETRY:
            reason = error if isinstance(error, Retry) else Retry(exc=error)
            if task.hooked:
                _guard(task, "on_retry", reason.exc, task_id, args, kwargs, einfo)
            if signals.task_retry.receivers:
                signals.task_retry.send(sender=task, request=task.request, reason=reason, einfo=einfo)
        else:
            if task.hooked:
                _guard(task, "on_failure", error, task_id, args, kwargs, einfo)
            if signals.task_failure.receivers:
                signals.task_failure.send(
                    sender=task,
                    task_id=task_id,
                    exception=error,
                    args=args,
                    kwargs=kwargs,
                    traceback=error.__traceback__,
                    einfo=einfo,
                )
    if task.hooked:
        _guard(task, "after_return", state, value, task_id, args, kwargs, einfo)
    return value


def _guard(task: Task, handler: str, *args: Any) -> None:
    """Call a task handler; one that raises is logged and the run's outcome stays as it was."""
    try:
        getattr(task, handler)(*args)
    except Exception:
        logger.exception("task %s[%s]: %s raised (ignored)", task.name, task.request.id, handler)


def _success(task: Task, job: Job, value: object, ignore: bool, worker: str | None, limit: int) -> Outcome:
    if ignore:
        return Outcome(SUCCESS)
    try:
        payload = result_payload(
            str(job.request["id"]),
            task.name,
            SUCCESS,
            result=value,
            retries=int(job.request.get("retries", 0)),
            worker=worker,
        )
    except TypeError:
        error = TypeError(f"result of type {type(value).__name__} is not JSON serialisable")
        return _failure(task, job, error, False, worker)
    if len(payload) > limit:  # never written: it would sit in the worker, the flush and Redis
        too_big = ResultTooLarge(
            f"result is {len(payload):,} bytes, over result_max_bytes={limit:,}; "
            "store it elsewhere and return a reference (a key, a URL)"
        )
        return _failure(task, job, too_big, False, worker)
    return Outcome(SUCCESS, payload)


def _autoretry(task: Task, job: Job, exc: BaseException, ignore: bool, worker: str | None) -> Outcome:
    retries = int(job.request.get("retries", 0))
    limit = task.options.max_retries
    if limit is not None and retries >= limit:
        return _failure(task, job, exc, ignore, worker)
    return _retry(task, job, exc, task.backoff_delay(retries), worker)


def revoked_outcome(
    task_id: str, task_name: str, reason: str, retries: int, worker: str | None, task: Task | None = None
) -> Outcome:
    """REVOKED for a task that did not run to its end: revoked, expired or terminated. Sends
    ``task_revoked`` (sender: ``task``, else its name)."""
    if signals.task_revoked.receivers:
        signals.task_revoked.send(
            sender=task if task is not None else task_name,
            request=Request(id=task_id, task=task_name, retries=retries, worker=worker),
            terminated=reason == "terminated",
            signum=signal.SIGKILL if reason == "terminated" else None,
            expired=reason == "expired",
        )
    payload = result_payload(
        task_id,
        task_name,
        REVOKED,
        exc_type="TaskRevoked",
        exc_message=reason,
        retries=retries,
        worker=worker,
    )
    return Outcome(REVOKED, payload, error=f"TaskRevoked: {reason}")


def lost_outcome(app: GreenQ, job: Job, exc: BaseException) -> Outcome:
    """FAILURE for a job whose process died or hit its hard time limit (built in the parent)."""
    task = app.tasks[job.task]
    request = job.request
    if isinstance(exc, TaskRevoked):
        return revoked_outcome(
            str(request["id"]),
            task.name,
            "terminated",
            int(request.get("retries", 0)),
            request.get("worker"),
            task,
        )
    return _failure(task, job, exc, bool(setting(task, app.conf, "ignore_result")), request.get("worker"))


def execute_with_deadline(app: GreenQ, job: Job) -> Outcome:
    """``execute`` in a prefork or hybrid child, with the task's deadline set (``greenq.limits``:
    the default timeout of its ``greenq.http`` and ``app.redis`` calls); the gevent pool sets it
    per greenlet itself."""
    expires = job.request.get("expires")
    token = set_deadline(deadline_of(job.started, job.time_limit, job.soft_time_limit, expires))
    try:
        return execute(app, job)
    finally:
        reset_deadline(token)


class ChildApp:
    """Picklable recipe for a prefork child's runner: import the app, apply the same settings.

    ``log``: (level, format, worker name) to set up the child's logging as the worker's (a
    forkserver child inherits none of it); None leaves logging alone.
    """

    def __init__(
        self,
        app_spec: str | None,
        config: str | None,
        overrides: dict[str, object],
        log: tuple[str, str, str | None] | None = None,
    ) -> None:
        self.app_spec, self.config, self.overrides = app_spec, config, overrides
        self.log = log

    def __call__(self) -> Callable[[Job], Outcome]:
        """Runs once in each prefork or hybrid child; sends ``worker_process_init`` there."""
        from greenq.loader import load_app

        if self.log is not None:
            from greenq.logs import configure

            configure(*self.log)
        app = load_app(self.app_spec)
        if self.config:
            app.config_from_object(self.config)
        if self.overrides:
            app.override(self.overrides)
        if signals.worker_process_init.receivers:
            signals.worker_process_init.send(sender=None)
        return functools.partial(execute_with_deadline, app)
