"""GeventPool: hundreds of jobs at once as greenlets, for tasks that wait on sockets.

Owns ``patch()`` (the CLI calls it before anything else is imported), the greenlet pool, time
limits via ``gevent.Timeout``, ending a running job (``terminate``: revoke with
terminate=True) and the deadline a job gives the calls it makes (``greenq.limits``).
Imports: gevent, exceptions, limits, pools.base; never Redis or the broker.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

import gevent
import gevent.event
from gevent.hub import Waiter, get_hub

from greenq.exceptions import SoftTimeLimitExceeded, TaskRevoked, TimeLimitExceeded
from greenq.limits import deadline_of, reset_deadline, set_deadline
from greenq.pools.base import Job, OnDone, Outcome, Runner

logger = logging.getLogger(__name__)
HARD_LIMIT_GRACE_S = 1.0  # after its hard time_limit, how long a job may keep its slot
FailureFactory = Callable[[Job, BaseException], Outcome]


class _HardTimeLimit(BaseException):
    """Thrown into a job's greenlet at its hard ``time_limit``.

    A BaseException (as ``gevent.Timeout`` is), so a task body's ``except Exception:`` cannot
    swallow it; the pool records the outcome as ``TimeLimitExceeded``.
    """


class _Terminated(BaseException):
    """Thrown into a job's greenlet when its task is revoked with ``terminate=True``: its
    ``finally:`` blocks run where it waits, and the job ends REVOKED."""


class _Limits:
    """The timers of one time-limited job and what became of it; touched only in the hub thread."""

    __slots__ = ("abandoned", "done", "fired", "started", "timers")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.fired = False  # the hard limit was thrown into the job
        self.abandoned = False  # the job outlived its grace: reported, its greenlet replaced
        self.done = False  # the runner returned or raised
        self.timers: list[Any] = []


def patch() -> None:
    """Monkey-patch the standard library for gevent. Must run before redis, requests or the
    user's app are imported; ``greenq.cli`` decides this from argv."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        from greenq.pools.gevent_plugins import plugin_lookup

        with plugin_lookup():
            monkey.patch_all()
    from greenq.pools import gevent_poll

    gevent_poll.install()


class GeventPool:
    """``concurrency`` long-lived greenlets, each taking jobs from one queue and running them.

    NOTE: not a greenlet per job (``gevent.pool.Pool.spawn``): spawning costs time on every
    task, and that pool freed a slot only after the job's completion callback had run, so the
    dispatcher, woken by that callback, often found no free slot and slept out its wait. Here a
    slot is free before ``on_done`` runs (docs/pools.md has the figures).
    Thread-locals and contextvars of a worker greenlet live on from one task to the next.

    ``soft_time_limit`` raises ``SoftTimeLimitExceeded`` inside the task, which it may catch.
    ``time_limit`` throws a BaseException into the task (``except Exception:`` does not stop
    it) and the job ends FAILURE ``TimeLimitExceeded``, whatever the body did after. A body that
    catches even that and keeps going is abandoned ``HARD_LIMIT_GRACE_S`` later: its outcome is
    reported and a new greenlet takes its slot, but the old greenlet runs on until it yields
    back for good (a greenlet cannot be destroyed from outside; a prefork child can be killed).

    Args:
        runner: runs one job and turns whatever happens into an Outcome; never raises.
        concurrency: greenlets, i.e. jobs at once.
        fail: builds the FAILURE outcome (with its result record) of a job the pool stopped at
            its hard time limit, as for PreforkPool; without it that outcome has no payload.
    """

    kind = "gevent"

    def __init__(self, runner: Runner, concurrency: int, fail: FailureFactory | None = None) -> None:
        self.runner = runner
        self.concurrency = concurrency
        self.fail = fail
        self._orphans: set[gevent.Greenlet] = set()  # abandoned past their hard limit, still running
        self._pending: deque[tuple[Job, OnDone]] = deque()
        self._idle: list[Waiter] = []  # workers waiting for a job; LIFO keeps the warm ones busy
        self._handing_out = False  # a hub callback is due to hand pending jobs to idle workers
        self._free = concurrency
        self.limit = concurrency  # jobs it may run at once now: HubGovernor lowers it under saturation
        self.finished = 0  # jobs ended (read by HubGovernor)
        self.fastest = float("inf")  # the shortest timed job's seconds since HubGovernor last looked
        self._timed = False  # time one job in 8 (HubGovernor is on)
        self._capped = False  # limit < concurrency: hand-outs check it
        self._cold = concurrency  # jobs of the first fill still to hand out in slices
        self._workers: list[gevent.Greenlet] = []
        self._jobs: dict[int, tuple[gevent.Greenlet, Job]] = {}  # running: key -> (its greenlet, job)
        self.hub_blocks = 0
        self.tick = 0.0  # the hub's last sign of life, for BlockDetector
        self._detector: Any = None
        # job key -> (longest stall of the hub while it ran, CPU seconds the hub used meanwhile).
        # Written by the native watchdog thread, read by the job's own greenlet.
        self.blocked: dict[int, tuple[float, float]] = {}
        self._busy = gevent.event.Event()  # set while jobs run (the ticker ticks then)
        self._busy.set()

    def enable_block_detection(self, threshold_s: float) -> None:
        """Log every task that blocks the event loop longer than ``threshold_s`` (0 disables);
        see greenq.pools.gevent_blocks."""
        if threshold_s > 0:
            from greenq.pools.gevent_blocks import BlockDetector

            self._detector = BlockDetector(self, threshold_s, GeventPool._run.__code__)
            self._detector.start()

    def start(self) -> None:
        self._workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]

    def enable_governor(self) -> None:
        """Run fewer than ``concurrency`` jobs at once while the hub is saturated (HubGovernor):
        the others wait in ``_pending``, ready, for a greenlet to finish its job."""
        from greenq.pools.gevent_governor import HubGovernor

        self._timed = True
        gevent.spawn(HubGovernor(self).run)

    def set_limit(self, limit: int) -> None:
        """Cap the jobs running in greenlets at ``limit`` (at most ``concurrency``); a raise hands
        waiting jobs to idle greenlets at once."""
        raised = limit > self.limit
        self.limit = limit
        self._capped = limit < self.concurrency
        if raised:
            self._raised()

    def _raised(self) -> None:
        if self._pending and self._idle and not self._handing_out:
            self._handing_out = True
            get_hub().loop.run_callback(self._hand_out)

    def _below_limit(self) -> bool:
        """Fewer jobs run in greenlets than ``limit`` allows (submitted = running + pending)."""
        return self.in_greenlets() < self.limit

    def in_greenlets(self) -> int:
        """Jobs running in greenlets now; the other submitted ones wait in ``_pending``."""
        return self.concurrency - self._free - len(self._pending)

    def running_longer_than(self, seconds: float) -> int:
        """Jobs submitted more than ``seconds`` ago and still running."""
        since = time.time() - seconds
        return sum(1 for _, job in list(self._jobs.values()) if job.started < since)

    def wait_busy(self) -> None:
        """Return once a job runs (at once if one does): an idle pool's helpers sleep."""
        if self._free == self.concurrency:
            self._busy.clear()
            self._busy.wait()

    def free_slots(self) -> int:
        return self._free

    def running(self) -> int:
        return self.concurrency - self._free

    def submit(self, job: Job, on_done: OnDone) -> None:
        self._free -= 1
        self._pending.append((job, on_done))
        if self._idle and not self._handing_out and (not self._capped or self._below_limit()):
            self._handing_out = True
            get_hub().loop.run_callback(self._hand_out)
        if not self._busy.is_set():  # wake the idle ticker, after the job: the hub is alive now
            self.tick = time.monotonic()
            self._busy.set()

    def _hand_out(self) -> None:
        """In the hub: wake one idle worker per pending job (a waiter can only be switched from it).

        NOTE: not ``gevent.queue.Queue``: each ``get`` that had to wait ends with a
        ``deque.remove`` of its waiter among all the others waiting, which cost ~500
        comparisons and a caught ValueError per task at -c 500.
        """
        self._handing_out = False
        pending, idle = self._pending, self._idle
        if self._cold > 0 and self._hand_out_cold():
            return
        capped = self._capped
        while pending and idle and (not capped or self._below_limit()):
            idle.pop().switch(pending.popleft())

    def _hand_out_cold(self) -> bool:
        """The pool's first fill, in 1 ms slices with the hub polling sockets between them: a
        first batch of hundreds would otherwise run every task to its first blocking call (each
        opening a connection) before any reply is read. True if it yielded to the hub."""
        pending, idle = self._pending, self._idle
        deadline = time.perf_counter() + 0.001
        while pending and idle and self._cold > 0 and (not self._capped or self._below_limit()):
            idle.pop().switch(pending.popleft())
            self._cold -= 1
            if pending and idle and time.perf_counter() > deadline:
                self._handing_out = True
                get_hub().loop.timer(0).start(self._hand_out)
                return True
        return False

    def _next_job(self, waiter: Waiter) -> tuple[Job, OnDone]:
        if self._pending and (not self._capped or self._below_limit()):  # without a trip through the hub
            return self._pending.popleft()
        self._idle.append(waiter)
        try:
            return waiter.get()
        except BaseException:  # killed while idle: never hand this waiter a job
            if waiter in self._idle:
                self._idle.remove(waiter)
            raise

    def _work(self) -> None:
        waiter = Waiter()
        me = gevent.getcurrent()
        while True:
            job, on_done = self._next_job(waiter)
            orphaned = False
            timed = self._timed and not job.key & 7  # one job in 8 is timed, for HubGovernor
            if timed:
                began = perf_counter()
            try:
                outcome = self._run(job, on_done, me)
            finally:
                if timed:
                    took = perf_counter() - began
                    if took < self.fastest:
                        self.fastest = took
                orphaned = bool(self._orphans) and me in self._orphans
                if not orphaned:
                    self._free += 1  # before on_done, which wakes the dispatcher to use this slot
                    self.finished += 1
            if orphaned:  # its outcome went out when it was abandoned; another greenlet has its slot
                self._orphans.discard(me)
                return
            on_done(job, outcome)

    def _run(self, job: Job, on_done: OnDone, me: gevent.Greenlet) -> Outcome:
        self._jobs[job.key] = (me, job)
        limited = job.time_limit is not None or job.soft_time_limit is not None
        expires = job.request.get("expires")
        token = None
        if limited or expires is not None:  # greenq.http and app.redis time out by then
            token = set_deadline(deadline_of(job.started, job.time_limit, job.soft_time_limit, expires))
        try:
            outcome = self._run_limited(job, on_done) if limited else self.runner(job)
        except _Terminated:
            outcome = self._terminated(job)
        finally:
            del self._jobs[job.key]
            if token is not None:
                reset_deadline(token)
        if self.blocked:
            self._detector.report(job)
        return outcome

    def running_keys(self) -> dict[int, str]:
        """Job key -> task id of every job running now."""
        return {key: str(job.request.get("id")) for key, (_, job) in list(self._jobs.items())}

    def terminate(self, key: int) -> bool:
        """End running job ``key`` (revoked with terminate=True); False if it is not running.

        The exception is thrown from the hub at the greenlet's next switch — where it waits on a
        socket or a sleep — so it ends within one trip through the event loop; a job that never
        yields (a CPU loop) cannot be ended this way. ``finally:`` blocks run; the job ends REVOKED.
        """
        found = self._jobs.get(key)
        if found is None:
            return False
        get_hub().loop.run_callback(self._throw_terminate, key, found[0])
        return True

    def _throw_terminate(self, key: int, greenlet: gevent.Greenlet) -> None:
        found = self._jobs.get(key)
        if found is not None and found[0] is greenlet:  # not ended meanwhile (nor replaced)
            greenlet.throw(_Terminated())

    def _terminated(self, job: Job) -> Outcome:
        error = TaskRevoked(str(job.request.get("id")), "TaskRevoked", "terminated")
        outcome = self.fail(job, error) if self.fail is not None else Outcome("REVOKED", error="terminated")
        outcome.runtime_s = time.time() - job.started if job.started else 0.0
        return outcome

    def _run_limited(self, job: Job, on_done: OnDone) -> Outcome:
        me = gevent.getcurrent()
        limits = _Limits()
        loop = get_hub().loop
        if job.time_limit:
            hard = loop.timer(job.time_limit)
            hard.start(self._hard_limit, limits, me, job, on_done)
            limits.timers.append(hard)
        if job.soft_time_limit:
            soft = gevent.Timeout(
                job.soft_time_limit,
                SoftTimeLimitExceeded(f"{job.task} exceeded soft_time_limit={job.soft_time_limit}s"),
            )
            soft.start()
            limits.timers.append(soft)
        outcome: Outcome | None = None
        try:
            outcome = self.runner(job)
        except _HardTimeLimit:
            if not limits.fired:
                raise
        finally:
            limits.done = True
            for timer in limits.timers:
                timer.close()
        if limits.fired or outcome is None:  # past the limit it failed, whatever the body did next
            outcome = self._timed_out(job, limits)
        return outcome

    def _timed_out(self, job: Job, limits: _Limits) -> Outcome:
        error = TimeLimitExceeded(f"{job.task} exceeded time_limit={job.time_limit}s")
        if self.fail is not None:
            outcome = self.fail(job, error)
        else:
            outcome = Outcome("FAILURE", error=f"TimeLimitExceeded: {error}")
        outcome.runtime_s = time.perf_counter() - limits.started
        return outcome

    def _hard_limit(self, limits: _Limits, greenlet: gevent.Greenlet, job: Job, on_done: OnDone) -> None:
        """In the hub, at the job's hard time limit: throw it in, and set the grace timer first
        (the throw runs the job's greenlet until it next yields)."""
        if limits.done:
            return
        limits.fired = True
        grace = get_hub().loop.timer(HARD_LIMIT_GRACE_S)
        grace.start(self._abandon, limits, greenlet, job, on_done)
        limits.timers.append(grace)
        greenlet.throw(_HardTimeLimit(f"{job.task} exceeded time_limit={job.time_limit}s"))

    def _abandon(self, limits: _Limits, greenlet: gevent.Greenlet, job: Job, on_done: OnDone) -> None:
        """In the hub: the job caught its hard limit and went on. Report it failed, give its slot
        to a new greenlet, and leave the old one to finish on its own."""
        if limits.done:
            return
        limits.abandoned = True
        self._orphans.add(greenlet)
        self._free += 1
        logger.error(
            "task %s[%s] still runs %.1fs after its hard time_limit=%ss (does it catch BaseException?): "
            "recorded as failed, its slot given to a new greenlet; the old one runs on",
            job.task,
            job.request.get("id"),
            HARD_LIMIT_GRACE_S,
            job.time_limit,
        )
        gevent.spawn(self._take_over, greenlet, job, on_done, self._timed_out(job, limits))
        greenlet.throw(_HardTimeLimit(f"{job.task} exceeded time_limit={job.time_limit}s"))

    def _take_over(self, old: gevent.Greenlet, job: Job, on_done: OnDone, outcome: Outcome) -> None:
        self._workers[self._workers.index(old)] = gevent.getcurrent()
        on_done(job, outcome)
        self._work()

    def stop(self, timeout_s: float | None) -> bool:
        """Wait until no job runs (up to ``timeout_s``); True if all finished."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._free < self.concurrency:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            gevent.sleep(0.02)
        return True

    def kill(self) -> None:
        gevent.killall([*self._workers, *self._orphans], block=False)

    def stats(self) -> dict[str, Any]:
        return {"busy": self.running(), "hub_blocks": self.hub_blocks, "limit": self.limit}
