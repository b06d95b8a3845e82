"""run_worker: build the pools and the consumer for an app, handle signals, stop.

First SIGTERM/SIGINT: graceful stop (reserved messages go back at once, running tasks get
``shutdown_timeout``). Second: exit at once; unacked messages are recovered by other workers
and each running early-ack task gets FAILURE (``WorkerLostError``), since none will run it
again. Imports: config, pools (chosen lazily), worker.consumer, worker.execute, worker.lanes.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from greenq import signals
from greenq.config import mask_url
from greenq.pools.base import Pool
from greenq.worker.consumer import Consumer
from greenq.worker.execute import ChildApp, execute, lost_outcome
from greenq.worker.lanes import LazyPool

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.worker.scheduler import Scheduler

logger = logging.getLogger("greenq.worker")


def default_concurrency(pool_kind: str) -> int:
    return {"gevent": 100, "solo": 1}.get(pool_kind, os.cpu_count() or 1)


def make_pool(
    app: GreenQ, kind: str, concurrency: int, child_app: ChildApp | None = None, nice: int = 0
) -> Pool:
    """The pool for ``kind``; gevent and prefork are imported only when chosen. ``nice``:
    niceness the prefork children add to their own (hybrid children yield to the event loop)."""
    runner = functools.partial(execute, app)
    if kind == "prefork":
        from greenq.pools.prefork import PreforkPool

        conf = app.conf
        child_app = child_app or ChildApp(None, None, {})
        preload = ["greenq.worker.execute"]
        if child_app.app_spec:
            preload.append(child_app.app_spec.partition(":")[0])
        return PreforkPool(
            child_app,
            functools.partial(lost_outcome, app),
            concurrency,
            max_tasks_per_child=conf.worker_max_tasks_per_child,
            max_memory_kib=conf.worker_max_memory_per_child,
            preload=preload,
            nice=nice,
        )
    if kind == "gevent":
        from greenq.pools.gevent import GeventPool

        return GeventPool(runner, concurrency, fail=functools.partial(lost_outcome, app))
    if kind == "solo":
        from greenq.pools.solo import SoloPool

        return SoloPool(runner)
    raise ValueError(f"unknown pool {kind!r}; expected gevent, prefork or solo")


def make_cpu_pool(app: GreenQ, kind: str, child_app: ChildApp | None) -> Pool | None:
    """Hybrid: a gevent worker's child-process pool for ``cpu=True`` tasks, when it may need
    one; its processes start with the first such task (``LazyPool``)."""
    wanted = app.conf.worker_cpu_workers
    if kind != "gevent" or wanted == 0:
        return None
    if wanted is None:
        if not any(task.options.cpu for task in app.tasks.values()):
            return None
        wanted = os.cpu_count() or 1
    make = functools.partial(make_pool, app, "prefork", wanted, child_app, nice=app.conf.worker_cpu_nice)
    return LazyPool(make, "prefork", wanted)


def make_scheduler(app: GreenQ, who: str) -> Scheduler | None:
    """The scheduler of the app's periodic schedules, or None without any. Built before the
    worker starts, so that a bad schedule stops it with the schedule named (ConfigError)."""
    schedules = app.schedules()
    if not schedules:
        return None
    from greenq.worker.scheduler import Scheduler

    return Scheduler(app, schedules, who)


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation every ``threshold`` allocations, and never look again at
    what start-up made (modules, classes, the app: ``gc.freeze``).

    NOTE: with Python's default of 700, a gevent worker running hundreds of tasks at a time
    spends a noticeable share of its CPU in the collector (docs/benchmarks.md): many young
    collections, each walking the objects of every task in flight, which then move up a
    generation to be walked again. Most garbage here has no cycles and is freed by reference
    counting anyway.
    """
    gc.enable()  # the command line may run a worker's imports with it off (nothing to collect)
    if threshold <= 0:
        return
    gc.freeze()  # NOTE: no gc.collect() first: it costs start-up time for a few dead objects
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


def run_worker(
    app: GreenQ,
    *,
    name: str,
    queues: Sequence[str] | None = None,
    extra_info: dict[str, Any] | None = None,
    child_app: ChildApp | None = None,
    metrics_port: int | None = None,
    schedule: bool = True,
) -> int:
    """Run a worker until signalled; returns the process exit code."""
    conf = app.conf
    kind = conf.worker_pool
    concurrency = conf.worker_concurrency or default_concurrency(kind)
    queues = list(queues or conf.worker_queues or [conf.task_default_queue])
    url = app.broker_url()
    logger.info(
        "greenq worker %s: broker %s, pool %s, concurrency %s, prefetch %s x %s, queues %s",
        name,
        mask_url(url),
        kind,
        concurrency,
        conf.worker_prefetch_multiplier,
        concurrency,
        ",".join(queues),
    )
    from greenq import http

    http.configure(concurrency)  # the shared HTTP client gets one connection per task slot
    pool = make_pool(app, kind, concurrency, child_app)
    cpu_pool = make_cpu_pool(app, kind, child_app)
    if kind == "gevent":
        pool.enable_block_detection(conf.worker_block_warning)  # type: ignore[attr-defined]
    if cpu_pool is not None:
        logger.info(
            "hybrid: up to %s child processes for cpu=True tasks (nice +%s), started with the first one",
            cpu_pool.concurrency,
            conf.worker_cpu_nice,
        )
    consumer = Consumer(
        app,
        pool,
        cpu_pool,
        queues=queues,
        name=name,
        prefetch_multiplier=conf.worker_prefetch_multiplier,
        extra_info=extra_info,
    )
    if kind == "gevent" and conf.worker_adaptive_concurrency:
        pool.enable_governor()  # type: ignore[attr-defined]
    signals.worker_init.send(sender=consumer)
    scheduler = make_scheduler(app, consumer.consumer_id) if schedule else None
    stop, force = threading.Event(), threading.Event()

    why: list[str] = []

    def hard_exit_when_forced() -> None:
        """Waits from start-up for a second signal. NOTE: the handler itself must not do the
        round trip of abandon(): under gevent it may run inside the hub, which cannot block
        (not even to start a thread); this thread (a greenlet once patched) can."""
        force.wait()
        try:
            consumer.abandon(why[0] if why else "forced")
        finally:
            os._exit(1)

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("second %s: exiting now; unacked messages are left for recovery", name)
            why.append(f"second {name}")
            force.set()
            return
        stop.set()  # first: a second signal arriving while this one logs is the second
        logger.warning("%s: graceful shutdown (again to stop now)", name)

    threading.Thread(target=hard_exit_when_forced, name="hard-exit", daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tune_gc(conf.worker_gc_threshold)
    consumer.start()
    if metrics_port:
        from greenq.metrics import WorkerCollector, serve

        serve(WorkerCollector(consumer), metrics_port)
        logger.info("metrics on http://127.0.0.1:%s/metrics", metrics_port)
    if scheduler is not None:  # every worker may fire them: each fire time is claimed once in Redis
        link = app.broker.link()
        threading.Thread(target=scheduler.run, args=(link, stop), name="scheduler", daemon=True).start()
    signals.worker_ready.send(sender=consumer)
    logger.info("worker ready: consumer %s, %s tasks registered", consumer.consumer_id, len(app.tasks))
    logger.debug("tasks: %s", ", ".join(sorted(app.tasks)))
    while not stop.wait(1.0):
        pass
    consumer.stop(conf.shutdown_timeout, force)
    signals.worker_shutdown.send(sender=consumer)
    return 0
