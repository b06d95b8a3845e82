"""Task bodies for ``scripts/bench.py``: the same functions run under greenq and under Celery.

Workers import this module with ``BENCH_FRAMEWORK=greenq`` (``-A bench_tasks``) or
``BENCH_FRAMEWORK=celery`` (``-A bench_tasks:celery``), so a greenq worker never imports Celery
and a Celery worker never imports greenq. The bench process builds both apps with
``make_greenq_app`` and ``make_celery_app``. Every Redis and HTTP client is created lazily, after
the worker has monkey-patched and after a prefork child has forked.

``python bench_tasks.py ceiling BODY ARG N CONCURRENCY`` runs a no-queue ceiling: the task
function BODY itself (one of ``CEILING_BODIES``), called N times from CONCURRENCY greenlets of one
gevent-patched process with the worker's GC setting; it prints one JSON line ``{"n": N,
"elapsed_s": ..., "cpu_s": ..., "started": ..., "ended": ...}``, the last two on the system-wide
monotonic clock so the bench can time parallel ceiling processes over their common span and
from their spawn.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

QUEUE = "bench"
COUNTER = "bench:counter"  # INCR'd by every incr/burn body: the bench polls it for completion
PIDS = "bench:pids"  # set of the process ids that ran burn bodies (is prefork/hybrid real?)
CPU_S = "bench:cpu_s"  # CPU seconds the burn bodies spent spinning: the work a pool had to spread

_clients: dict[str, Any] = {}


def redis_client() -> Any:
    """This process's redis-py client for task bodies: one pool of up to 600 connections."""
    if "redis" not in _clients:
        import redis

        _clients["redis"] = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], max_connections=600)
    return _clients["redis"]


def http_session() -> Any:
    """This process's requests.Session, with a connection pool sized for -c 500."""
    if "http" not in _clients:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=1000))
        _clients["http"] = session
    return _clients["http"]


def greenq_session() -> Any:
    """This process's ``greenq.http.requests_session()``, sized to the worker's concurrency."""
    if "greenq_session" not in _clients:
        from greenq import http

        _clients["greenq_session"] = http.requests_session()
    return _clients["greenq_session"]


# ---- latency, shared by bench.py and latency_probe.py ---------------------------------


def round_trip_ms(task: Any) -> float:
    """Milliseconds from ``task.delay()`` to its result in hand (greenq or Celery)."""
    started = time.perf_counter()
    assert task.delay().get(timeout=10) == 1
    return (time.perf_counter() - started) * 1000


def open_loop_ms(task: Any, rate: float, count: int, measure: Any = contextlib.nullcontext) -> list[float]:
    """``count`` round trips sent on a schedule of ``rate`` per second, whatever the latency (open
    loop), from 32 producer threads; each one's latency in ms. The worker must be up. ``measure()``
    is entered around the timed part only (warm-up: 20 calls, then one per thread, so every
    thread has its connection before the clock starts)."""
    import concurrent.futures  # here: workers import this module too, and never need it

    for _ in range(20):
        round_trip_ms(task)
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for _ in range(32):
            pool.submit(round_trip_ms, task).result()
        with measure():
            futures, start = [], time.perf_counter()
            for i in range(count):
                time.sleep(max(0.0, start + i / rate - time.perf_counter()))
                futures.append(pool.submit(round_trip_ms, task))
            return [future.result() for future in futures]


# ---- the bodies ----------------------------------------------------------------------


def incr() -> int:
    """One Redis round trip."""
    return int(redis_client().incr(COUNTER))


def noop() -> None:
    """Nothing at all: what is left is the queue's own cost."""


def fetch(url: str) -> int:
    """One HTTP GET through the shared session."""
    return int(http_session().get(url, timeout=30).status_code)


def fetch_fast(url: str) -> int:
    """One HTTP GET through greenq.http, the worker's shared pool-sized urllib3 client.

    Imported here, not at the top: a Celery worker must never import greenq.
    """
    from greenq import http

    return int(http.get(url, timeout=30).status_code)


def fetch_session(url: str) -> int:
    """One HTTP GET through ``greenq.http.requests_session()``: requests, sized by greenq."""
    return int(greenq_session().get(url, timeout=30).status_code)


def incr_app() -> int:
    """One INCR through ``app.redis``, the worker app's shared client, as docs/http-tasks.md
    tells users to write it (``app`` is this module's worker app, set below)."""
    return int(app.redis.incr(COUNTER))


def echo() -> int:
    """A result and no work: for enqueue-to-done latency."""
    return 1


def spin(loops: int) -> int:
    """Pure-Python CPU work; ``loops`` is calibrated by the bench to take ~50 ms."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def burn(loops: int) -> int:
    """``spin``, then record its CPU time and which process ran it, and count it: one round trip."""
    started = time.process_time()
    spin(loops)
    pipe = redis_client().pipeline(transaction=False)
    pipe.incrbyfloat(CPU_S, time.process_time() - started)
    pipe.sadd(PIDS, os.getpid())
    pipe.incr(COUNTER)
    pipe.execute()
    return os.getpid()


# name -> (function, options)
BODIES: dict[str, tuple[Any, dict[str, Any]]] = {
    "incr": (incr, {}),
    "noop": (noop, {"ignore_result": True}),
    "fetch": (fetch, {}),
    "echo": (echo, {}),
    "burn": (burn, {}),
}
# Bodies through greenq's own clients: registered on the greenq app only (Celery has no equivalent).
GREENQ_BODIES: dict[str, tuple[Any, dict[str, Any]]] = {
    "fetch_fast": (fetch_fast, {}),
    "fetch_session": (fetch_session, {}),
    "incr_app": (incr_app, {}),
}


def make_greenq_app(url: str | None = None, hybrid: bool = False) -> Any:
    """A greenq app with every body registered as ``bench.<name>`` on queue ``bench``.

    ``hybrid`` adds ``bench.burn_cpu`` (``cpu=True``). Only the hybrid run registers it: a
    gevent worker that knows a ``cpu=True`` task starts child processes for it, which would add
    their start-up and memory to every other workload.
    """
    from greenq import GreenQ

    app = GreenQ("bench", broker=url, task_default_queue=QUEUE)
    for name, (function, options) in {**BODIES, **GREENQ_BODIES}.items():
        app.task(name=f"bench.{name}", **options)(function)
    if hybrid:
        app.task(name="bench.burn_cpu", cpu=True)(burn)
    return app


def make_celery_app(url: str, worker: bool = False) -> Any:
    """A Celery app on the same Redis (broker and result backend), prefetch multiplier 4.

    In the worker, ``result_backend_thread_safe`` shares one result backend (one connection
    pool) between greenlets; Celery's default keeps one per thread, which gevent makes one per
    greenlet, i.e. a new backend and connection per task. The producer keeps the default so
    that its threads each wait on their own backend.
    """
    from celery import Celery

    app = Celery("bench", broker=url, backend=url)
    app.conf.update(
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=4,
        task_ignore_result=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_backend_thread_safe=worker,
    )
    for name, (function, options) in BODIES.items():
        app.task(name=f"bench.{name}", ignore_result=bool(options.get("ignore_result")))(function)
    return app


_framework = os.environ.get("BENCH_FRAMEWORK")
if _framework == "greenq":
    app = make_greenq_app(hybrid=os.environ.get("BENCH_HYBRID") == "1")
elif _framework == "celery":
    celery = make_celery_app(os.environ["BENCH_REDIS_URL"], worker=True)


# ---- ceilings: the bodies without a queue --------------------------------------------


# The task functions a ceiling may call, each with ARG (the URL, or "-" for none)
CEILING_BODIES: dict[str, Any] = {
    "fetch": fetch,  # requests.Session: the http row
    "fetch_fast": fetch_fast,  # greenq.http: http_client, http_procs
    "fetch_session": fetch_session,  # greenq.http.requests_session(): http_session
    "incr": lambda _arg: incr(),  # redis-py, a pool of up to 600 connections: drain
    "incr_app": lambda _arg: incr_app(),  # app.redis of this module's greenq app: drain_app
}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, its threads included (10 ms ticks), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tune_gc() -> None:
    """What a worker does before its first task (``greenq.worker.main.tune_gc``, with the default
    ``worker_gc_threshold``): the ceiling differs from the worker by the queue alone."""
    import gc

    from greenq.config import Settings

    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(Settings().worker_gc_threshold, middle, oldest)


def ceiling(body: str, arg: str, n: int, concurrency: int) -> dict[str, float]:
    """Call ``body`` ``n`` times from ``concurrency`` greenlets; cold clients, as a worker has."""
    import gevent

    global app
    if body == "incr_app":  # the body reads this module's worker app
        app = make_greenq_app()
    if body in ("fetch_fast", "fetch_session"):  # sized as the worker sizes it before its first task
        from greenq import http

        http.configure(concurrency)
    tune_gc()
    from greenq.broker.stack import cache_redis_lib_version  # as every greenq process does

    cache_redis_lib_version()
    call, calls = CEILING_BODIES[body], iter(range(n))

    def loop() -> None:
        for _ in calls:
            call(arg)

    started, began, cpu = time.perf_counter(), time.monotonic(), time.process_time()
    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)], raise_error=True)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"n": n, "elapsed_s": elapsed, "cpu_s": cpu, "started": began, "ended": time.monotonic()}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from greenq.pools.gevent import patch

    patch()  # as a worker patches: the ceiling differs from the worker by the queue alone
    if len(sys.argv) != 6 or sys.argv[1] != "ceiling" or sys.argv[2] not in CEILING_BODIES:
        sys.exit(f"usage: bench_tasks.py ceiling {'|'.join(CEILING_BODIES)} URL|- N CONCURRENCY")
    print(json.dumps(ceiling(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))), flush=True)
