"""GeventPool: hundreds of jobs at once as greenlets, for tasks that wait on sockets.

Owns ``patch()`` (the CLI calls it before anything else is imported), the greenlet pool and
time limits via ``gevent.Timeout``. Imports: gevent, pools.base; never Redis or the broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
import gevent.pool

from greenq.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from greenq.pools.base import Job, OnDone, Outcome, Runner

logger = logging.getLogger(__name__)


def patch() -> None:
    """Monkey-patch the standard library for gevent. Must run before redis, requests or the
    user's app are imported; ``greenq.cli`` decides this from argv."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def is_patched() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))


class GeventPool:
    """A ``gevent.pool.Pool`` of ``concurrency`` greenlets running the runner on each job.

    ``time_limit`` kills the job's greenlet with ``TimeLimitExceeded``; ``soft_time_limit``
    raises ``SoftTimeLimitExceeded`` inside the task first, which it may catch.
    """

    kind = "gevent"

    def __init__(self, runner: Runner, concurrency: int) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self._pool = gevent.pool.Pool(concurrency)
        self.hub_blocks = 0
        # greenlet -> monotonic time the monitor thread first saw it blocking the hub. Written
        # by gevent's native monitor thread, read by the task's own greenlet.
        self._blocked: dict[Any, float] = {}
        self._block_threshold_s = 0.0

    def enable_block_detection(self, threshold_s: float) -> None:
        """Log every task that blocks the event loop longer than ``threshold_s`` (0 disables).

        Uses gevent's monitor thread; its own multi-line report is replaced by one log line per
        task, written when the task ends, naming it and saying how long it held the hub.
        """
        if threshold_s <= 0:
            return
        import gevent.events
        from zope.event import subscribers

        gevent.config.monitor_thread = True
        gevent.config.max_blocking_time = threshold_s
        self._block_threshold_s = threshold_s

        def on_event(event: object) -> None:
            if isinstance(event, gevent.events.EventLoopBlocked):
                event.info[:] = []  # no stack dump on stderr; the task's log line says it
                self._blocked.setdefault(event.greenlet, time.monotonic() - threshold_s)

        subscribers.append(on_event)
        gevent.get_hub().start_periodic_monitoring_thread()

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return int(self._pool.free_count())

    def running(self) -> int:
        return len(self._pool)

    def submit(self, job: Job, on_done: OnDone) -> None:
        self._pool.spawn(self._run, job, on_done)

    def _run(self, job: Job, on_done: OnDone) -> None:
        if job.time_limit is None and job.soft_time_limit is None:
            outcome = self.runner(job)
        else:
            outcome = self._run_limited(job)
        if self._blocked:
            self._report_block(job)
        on_done(job, outcome)

    def _report_block(self, job: Job) -> None:
        since = self._blocked.pop(gevent.getcurrent(), None)
        if since is None:
            return
        self.hub_blocks += 1
        logger.warning(
            "task %s[%s] blocked the event loop for %.2fs (worker_block_warning=%ss): no other task "
            "ran meanwhile; mark it @app.task(cpu=True) to run it in a child process",
            job.task,
            job.request.get("id"),
            time.monotonic() - since,
            self._block_threshold_s,
        )

    def _run_limited(self, job: Job) -> Outcome:
        hard = (
            gevent.Timeout(
                job.time_limit, TimeLimitExceeded(f"{job.task} exceeded time_limit={job.time_limit}s")
            )
            if job.time_limit
            else None
        )
        soft = (
            gevent.Timeout(
                job.soft_time_limit,
                SoftTimeLimitExceeded(f"{job.task} exceeded soft_time_limit={job.soft_time_limit}s"),
            )
            if job.soft_time_limit
            else None
        )
        for timer in (hard, soft):
            if timer is not None:
                timer.start()
        try:
            return self.runner(job)
        finally:
            for timer in (hard, soft):
                if timer is not None:
                    timer.close()

    def stop(self, timeout_s: float | None) -> bool:
        return bool(self._pool.join(timeout=timeout_s))

    def kill(self) -> None:
        self._pool.kill(block=False)

    def stats(self) -> dict[str, Any]:
        return {"busy": self.running(), "hub_blocks": self.hub_blocks}
