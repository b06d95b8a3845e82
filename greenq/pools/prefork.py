"""PreforkPool: CPU-bound jobs in child processes, one job per child at a time.

Children come from a ``forkserver``: a clean process started with exec (never forked from the
parent, which may be monkey-patched or threaded), which preloads the app module and forks each
child from itself — cheap to start and to recycle. The parent talks to each child over a pipe;
one collector thread waits on all pipes and child sentinels, so a child that dies mid-job is
noticed at once (``Outcome(lost=True)``), and a job past its hard ``time_limit`` gets its child
killed and replaced. ``soft_time_limit`` raises inside the child (SIGALRM). Children are
recycled after ``max_tasks_per_child`` jobs or when their RSS passes ``max_memory_kib``.

Imports: multiprocessing, pools.base; never Redis or the broker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greenq.exceptions import SoftTimeLimitExceeded, TaskRevoked, TimeLimitExceeded, WorkerLostError
from greenq.pools.base import Job, OnDone, Outcome

RunnerFactory = Callable[[], Callable[[Job], Outcome]]
FailureFactory = Callable[[Job, BaseException], Outcome]


def _soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("soft_time_limit exceeded")


def _rss_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_main(
    conn: multiprocessing.connection.Connection,
    make_runner: RunnerFactory,
    max_tasks: int | None,
    max_memory_kib: int | None,
    nice: int = 0,
) -> None:
    """Loop in a child: receive a Job, run it, send (Outcome, recycle?) back."""
    if nice:
        os.nice(nice)  # a hybrid worker's CPU work yields the core to its event loop
    os.set_blocking(conn.fileno(), True)  # a gevent-patched parent made the socketpair non-blocking
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGALRM, _soft_limit)
    runner = make_runner()
    done = 0
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        if job.soft_time_limit:
            signal.setitimer(signal.ITIMER_REAL, job.soft_time_limit)
        try:
            outcome = runner(job)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        done += 1
        recycle = bool((max_tasks and done >= max_tasks) or (max_memory_kib and _rss_kib() > max_memory_kib))
        conn.send((outcome, recycle))
        if recycle:
            return


@dataclass
class _Child:
    process: Any
    conn: multiprocessing.connection.Connection
    job: Job | None = None
    on_done: OnDone | None = None
    started: float = 0.0
    recycling: bool = False
    terminated: bool = False


class PreforkPool:
    """``concurrency`` child processes; ``submit`` hands a job to an idle one.

    Args:
        make_runner: picklable factory run in each child to build its runner (it imports the app).
        fail: builds the FAILURE outcome for a job whose child died or hit its hard time limit.
        preload: modules the forkserver imports once, so forked children start warm.
        nice: niceness each child adds to its own (a hybrid worker's children: 10 by default).
    """

    kind = "prefork"

    def __init__(
        self,
        make_runner: RunnerFactory,
        fail: FailureFactory,
        concurrency: int,
        *,
        max_tasks_per_child: int | None = None,
        max_memory_kib: int | None = None,
        preload: list[str] | None = None,
        nice: int = 0,
    ) -> None:
        self.make_runner = make_runner
        self.fail = fail
        self.concurrency = concurrency
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_kib = max_memory_kib
        self.nice = nice
        self._ctx = multiprocessing.get_context("forkserver")
        if preload:
            self._ctx.set_forkserver_preload(preload)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._replaced = 0
        self._collector: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()

    # ---- lifecycle -------------------------------------------------------------------

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main,
            name="greenq-child",
            daemon=True,
            args=(child_conn, self.make_runner, self.max_tasks_per_child, self.max_memory_kib, self.nice),
        )
        process.start()
        child_conn.close()
        # NOTE: blocking on purpose, also under gevent: the collector reads only after wait()
        # reports data, and whole small messages arrive at once.
        os.set_blocking(parent_conn.fileno(), True)
        return _Child(process, parent_conn)

    def start(self) -> None:
        self._children = [self._spawn() for _ in range(self.concurrency)]
        self._collector = threading.Thread(target=self._collect, name="prefork-collector", daemon=True)
        self._collector.start()

    def free_slots(self) -> int:
        with self._lock:
            return sum(1 for c in self._children if c.job is None and not c.recycling)

    def running(self) -> int:
        with self._lock:
            return sum(1 for c in self._children if c.job is not None)

    def submit(self, job: Job, on_done: OnDone) -> None:
        with self._lock:
            child = next(c for c in self._children if c.job is None and not c.recycling)
            child.job, child.on_done, child.started = job, on_done, time.monotonic()
        child.conn.send(job)
        os.write(self._wake_w, b"x")  # the collector recomputes its time-limit deadline

    def stop(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.running():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        self._stopping = True
        os.write(self._wake_w, b"x")
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        for child in children:
            child.process.join(5)
            if child.process.is_alive():
                child.process.kill()
        return True

    def stats(self) -> dict[str, Any]:
        return {"busy": self.running(), "children": self.concurrency, "children_replaced": self._replaced}

    def running_keys(self) -> dict[int, str]:
        """Job key -> task id of every job running now."""
        with self._lock:
            return {c.job.key: str(c.job.request.get("id")) for c in self._children if c.job is not None}

    def terminate(self, key: int) -> bool:
        """Kill the child running job ``key``; the job ends REVOKED. False if it is not running."""
        with self._lock:
            child = next((c for c in self._children if c.job is not None and c.job.key == key), None)
            if child is None:
                return False
            child.terminated = True
        child.process.kill()
        return True

    # ---- collector -------------------------------------------------------------------

    def _collect(self) -> None:
        while not self._stopping:
            with self._lock:
                children = list(self._children)
            waitables: list[Any] = [self._wake_r]
            for child in children:
                waitables.extend((child.conn, child.process.sentinel))
            ready = multiprocessing.connection.wait(waitables, timeout=self._next_deadline(children))
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for child in children:
                if child.conn in ready:
                    self._receive(child)
                elif child.process.sentinel in ready:
                    self._lost(child, self._why_lost(child))
            self._enforce_time_limits(children)

    @staticmethod
    def _why_lost(child: _Child) -> BaseException:
        if child.terminated and child.job is not None:
            return TaskRevoked(str(child.job.request.get("id")), "TaskRevoked", "terminated")
        return WorkerLostError(
            f"child {child.process.pid} exited with {child.process.exitcode} during the task"
        )

    def _next_deadline(self, children: list[_Child]) -> float:
        soonest = 1.0
        clock = time.monotonic()
        for child in children:
            if child.job is not None and child.job.time_limit:
                soonest = min(soonest, max(0.0, child.started + child.job.time_limit - clock))
        return soonest

    def _receive(self, child: _Child) -> None:
        try:
            outcome, recycle = child.conn.recv()
        except (EOFError, OSError):
            self._lost(child, self._why_lost(child))
            return
        job, on_done = child.job, child.on_done
        if recycle:
            child.process.join(5)
            self._replace(child)
        else:
            with self._lock:
                child.job = child.on_done = None
        if job is not None and on_done is not None:
            on_done(job, outcome)

    def _lost(self, child: _Child, error: BaseException) -> None:
        job, on_done = child.job, child.on_done
        child.process.join(1)
        self._replace(child)
        if job is not None and on_done is not None:
            outcome = self.fail(job, error)
            outcome.lost = isinstance(error, WorkerLostError)
            on_done(job, outcome)

    def _enforce_time_limits(self, children: list[_Child]) -> None:
        clock = time.monotonic()
        for child in children:
            job = child.job
            if job is not None and job.time_limit and clock - child.started > job.time_limit:
                child.process.kill()
                self._lost(child, TimeLimitExceeded(f"{job.task} exceeded time_limit={job.time_limit}s"))

    def _replace(self, old: _Child) -> None:
        old.conn.close()
        if self._stopping:
            return
        new = self._spawn()
        with self._lock:
            self._children[self._children.index(old)] = new
            self._replaced += 1
