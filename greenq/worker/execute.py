"""Running one task body and turning whatever happens into an ``Outcome``.

The same function runs in a greenlet, inline (solo) or in a prefork child, so it takes only
the app and a picklable ``Job``. A task that raises, returns something that is not JSON, or
calls ``sys.exit()`` gives FAILURE; it never takes the worker down. Also builds the outcome
records the consumer writes for tasks that never ran (revoked, expired, abandoned). Imports:
message (result records), task (request context), pools.base, worker.admission, and loader in
prefork children; no Redis.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from greenq.exceptions import Retry, TaskRevoked
from greenq.message import FAILURE, RETRY, REVOKED, SUCCESS, result_payload
from greenq.pools.base import Job, Outcome
from greenq.task import reset_request, set_request
from greenq.worker.admission import setting

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.task import Task


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
    options = task.options
    ignore = setting(task, app.conf, "ignore_result")
    worker = job.request.get("worker")
    token = set_request(job.request)
    started = time.perf_counter()
    try:
        try:
            value = task(*job.args, **job.kwargs)
        except Retry as retry:
            outcome = _retry(task, job, retry.exc, retry.countdown_s or 0.0, worker)
        except options.autoretry_for as exc:
            outcome = _autoretry(task, job, exc, ignore, worker)
        except (Exception, SystemExit) as exc:
            outcome = _failure(task, job, exc, ignore, worker)
        else:
            outcome = _success(task, job, value, ignore, worker)
    finally:
        reset_request(token)
    outcome.runtime_s = time.perf_counter() - started
    return outcome


def _success(task: Task, job: Job, value: object, ignore: bool, worker: str | None) -> Outcome:
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
    return Outcome(SUCCESS, payload)


def _autoretry(task: Task, job: Job, exc: BaseException, ignore: bool, worker: str | None) -> Outcome:
    retries = int(job.request.get("retries", 0))
    limit = task.options.max_retries
    if limit is not None and retries >= limit:
        return _failure(task, job, exc, ignore, worker)
    return _retry(task, job, exc, task.backoff_delay(retries), worker)


def revoked_outcome(task_id: str, task_name: str, reason: str, retries: int, worker: str | None) -> Outcome:
    """REVOKED for a task that did not run to its end: revoked, expired or terminated."""
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
            str(request["id"]), task.name, "terminated", int(request.get("retries", 0)), request.get("worker")
        )
    return _failure(task, job, exc, bool(setting(task, app.conf, "ignore_result")), request.get("worker"))


class ChildApp:
    """Picklable recipe for a prefork child's runner: import the app, apply the same settings."""

    def __init__(self, app_spec: str | None, config: str | None, overrides: dict[str, object]) -> None:
        self.app_spec, self.config, self.overrides = app_spec, config, overrides

    def __call__(self) -> Callable[[Job], Outcome]:
        from greenq.loader import load_app

        app = load_app(self.app_spec)
        if self.config:
            app.config_from_object(self.config)
        if self.overrides:
            app.override(self.overrides)
        return functools.partial(execute, app)
