"""Locust users that act as producer services of a greenq worker.

Each user, in a loop with no wait time, enqueues one task with ``Task.delay()`` and blocks on
``AsyncResult.get(timeout=...)`` until the worker has written its result. Two events per task reach
locust's stats, so its live UI, CSV and HTML report show throughput and percentiles per task kind:

* ``enqueue <kind>``: the time ``delay()`` took (encode + one Redis round trip);
* ``complete <kind>``: the time from just before ``delay()`` to the result in hand, i.e. queueing
  + execution + result delivery, as the producing service sees it. Its rate is completed tasks/s.
* ``body <kind>``: how long the task body took inside the worker, as the task itself measured it
  (wall time of the GET; CPU time of the loop). ``complete - body`` is what the queue added.

A task that fails, times out or returns something unexpected is a ``complete`` failure with the
exception; a ``delay()`` that raises is an ``enqueue`` failure (nothing is waited for).

Configuration, from the environment (not ``GREENQ_*``: greenq rejects unknown names there):

* ``GREENQ_BROKER_URL``: the broker (a real greenq setting, read by the app).
* ``LT_KIND``: ``http`` (GET the target), ``cpu`` (~50 ms of pure Python) or ``mixed`` (both: HTTP
  users plus ``LT_CPU_USERS`` CPU users). Default ``http``.
* ``LT_CPU_TASK``: which CPU task to send: ``cpu_burn`` (runs in the worker's own pool) or
  ``cpu_burn_child`` (declared ``cpu=True``: a hybrid gevent worker runs it in a child process).
  Default ``cpu_burn`` for ``cpu`` and ``cpu_burn_child`` for ``mixed``.
* ``LT_CPU_USERS``: CPU users in ``mixed`` (default 6); the other ``-u`` users send HTTP tasks.
* ``LT_TARGET_URL``: what HTTP tasks GET (default ``http://127.0.0.1:8099/delay/100``).
* ``LT_TIMEOUT``: seconds ``get()`` waits before the task counts as failed (default 60).

Run from the repository root, e.g.::

    GREENQ_BROKER_URL=redis://127.0.0.1:6379/0 LT_KIND=http \\
        locust -f loadtests/locustfile.py --headless -u 200 -r 100 -t 60s
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from locust import User, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import loadtests` from any cwd

from greenq import Task
from loadtests import tasks

KINDS = ("http", "cpu", "mixed")
KIND = os.environ.get("LT_KIND", "http")
if KIND not in KINDS:
    raise SystemExit(f"LT_KIND={KIND!r}: expected one of {', '.join(KINDS)}")
CPU_TASKS: dict[str, Task] = {"cpu_burn": tasks.cpu_burn, "cpu_burn_child": tasks.cpu_burn_child}
CPU_TASK_NAME = os.environ.get("LT_CPU_TASK") or ("cpu_burn_child" if KIND == "mixed" else "cpu_burn")
if CPU_TASK_NAME not in CPU_TASKS:
    raise SystemExit(f"LT_CPU_TASK={CPU_TASK_NAME!r}: expected one of {', '.join(CPU_TASKS)}")
TARGET_URL = os.environ.get("LT_TARGET_URL", "http://127.0.0.1:8099/delay/100")
TIMEOUT_S = float(os.environ.get("LT_TIMEOUT", "60"))
CPU_USERS = int(os.environ.get("LT_CPU_USERS", "6"))


class UnexpectedResult(Exception):
    """The task succeeded but returned something other than what its body returns."""


class Producer(User):
    """One producer service: enqueue, wait for the result, repeat (no think time)."""

    abstract = True
    wait_time = constant(0)
    kind = ""

    def call(self) -> tuple[Task, tuple[Any, ...], str, Any]:
        """The task to send, its arguments, and the key and value its result dict must hold."""
        raise NotImplementedError

    def _fire(self, request_type: str, ms: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=self.kind,
            response_time=ms,
            response_length=0,
            exception=exception,
            context={},
        )

    @task
    def enqueue_and_wait(self) -> None:
        greenq_task, args, key, expected = self.call()
        started = time.perf_counter()
        try:
            result = greenq_task.delay(*args)
        except Exception as exc:
            self._fire("enqueue", (time.perf_counter() - started) * 1000, exc)
            return
        self._fire("enqueue", (time.perf_counter() - started) * 1000)
        error: Exception | None = None
        value: Any = None
        try:
            value = result.get(timeout=TIMEOUT_S)
            if not isinstance(value, dict) or value.get(key) != expected:
                error = UnexpectedResult(f"task {result.id} returned {value!r}, expected {key}={expected!r}")
        except Exception as exc:
            error = exc
        self._fire("complete", (time.perf_counter() - started) * 1000, error)
        if error is None:
            self._fire("body", float(value["ms"]))


class HttpProducer(Producer):
    """Sends ``http_get(LT_TARGET_URL)``; the worker's task GETs the target (100 ms by default)."""

    abstract = KIND not in ("http", "mixed")
    kind = "http"

    def call(self) -> tuple[Task, tuple[Any, ...], str, Any]:
        return tasks.http_get, (TARGET_URL,), "status", 200


class CpuProducer(Producer):
    """Sends ``cpu_burn`` or ``cpu_burn_child`` (~50 ms of pure-Python CPU each)."""

    abstract = KIND not in ("cpu", "mixed")
    kind = "cpu"
    if KIND == "mixed":
        fixed_count = CPU_USERS  # spawned first; the remaining users are HttpProducers

    expected = tasks.cpu_body(tasks.CPU_LOOPS) if not abstract else None

    def call(self) -> tuple[Task, tuple[Any, ...], str, Any]:
        return CPU_TASKS[CPU_TASK_NAME], (), "value", self.expected


@events.test_start.add_listener
def _check_broker(environment: Any, **_kwargs: Any) -> None:
    """Fail fast (before any user starts) when the broker is not there."""
    tasks.app.broker.ping()
    print(
        f"greenq load test: LT_KIND={KIND}, cpu task {CPU_TASK_NAME}, target {TARGET_URL}, "
        f"broker {tasks.app.broker!r}",
        file=sys.stderr,
        flush=True,
    )
