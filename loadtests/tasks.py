"""The load tests' greenq app and task bodies, run by ``greenq worker -A loadtests.tasks``.

Producer side too: the locustfile imports this module to enqueue (no gevent needed for that; locust
brings its own). The broker comes from ``GREENQ_BROKER_URL``, as for any greenq app.

Tasks:

* ``http_get(url)``: one ``requests`` GET through a shared, pool-sized session (one per process), the
  way a real HTTP-heavy task is written, with ``trust_env = False``: otherwise requests reads the
  proxy and netrc settings from ``os.environ`` and the disk on every call, which py-spy showed as ~15 %
  of a gevent worker's CPU in these tests.
* ``cpu_burn(loops)``: pure-Python arithmetic that holds the GIL (~50 ms at ``CPU_LOOPS`` on the
  2-core machine the figures come from when it is idle; ``python -m loadtests.tasks`` times it here).
* ``cpu_burn_child(loops)``: the same body declared ``cpu=True``: a gevent worker with hybrid support
  runs it in its child-process pool instead of a greenlet.

Each returns a small dict with what it computed and how long its body took inside the worker
(``ms``: wall time of the GET; CPU time of the loop), so the producers can report the body's own
time next to the end-to-end time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from greenq import GreenQ

app = GreenQ("loadtests", task_default_queue="loadtests")

CPU_LOOPS = 570_000
"""Iterations of ``cpu_body`` that take ~50 ms of CPU on the reference machine when it is idle
(33 ms for 380,000 measured; under load the same loop takes up to 1.5x longer)."""

_session: requests.Session | None = None


def session() -> requests.Session:
    """One keep-alive session per process, with room for every greenlet of a ``-c 500`` worker."""
    global _session
    if _session is None:
        _session = requests.Session()
        _session.trust_env = False  # no proxy/netrc lookups per request
        _session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=1000))
    return _session


def cpu_body(loops: int) -> int:
    """Pure-Python work: no I/O, no C extension releasing the GIL."""
    total = 0
    for i in range(loops):
        total = (total + i * i) % 1_000_003
    return total


@app.task
def http_get(url: str) -> dict[str, Any]:
    """GET ``url`` (the target's ``/delay/<ms>``): ``{"status": HTTP status, "ms": wall ms of the GET}``."""
    started = time.perf_counter()
    status = session().get(url, timeout=30).status_code
    return {"status": status, "ms": (time.perf_counter() - started) * 1000}


def _timed_cpu_body(loops: int) -> dict[str, Any]:
    # thread_time: CPU of this thread only. Under gevent every greenlet runs in the main thread,
    # but the loop never yields, so the difference is the loop's own CPU.
    started = time.thread_time()
    value = cpu_body(loops)
    return {"value": value, "ms": (time.thread_time() - started) * 1000}


@app.task
def cpu_burn(loops: int = CPU_LOOPS) -> dict[str, Any]:
    """~50 ms of pure-Python CPU, run by whichever pool the worker has: ``{"value", "ms": CPU ms}``."""
    return _timed_cpu_body(loops)


@app.task(cpu=True)
def cpu_burn_child(loops: int = CPU_LOOPS) -> dict[str, Any]:
    """The same body, declared ``cpu=True`` for the hybrid gevent worker's child processes."""
    return _timed_cpu_body(loops)


def time_cpu_body(loops: int = CPU_LOOPS, repeat: int = 7) -> float:
    """Median milliseconds of one ``cpu_body(loops)`` call in this process."""
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        cpu_body(loops)
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


if __name__ == "__main__":
    print(f"cpu_body({CPU_LOOPS}) takes {time_cpu_body():.1f} ms of CPU here")
