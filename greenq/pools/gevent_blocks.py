"""BlockDetector: names the gevent pool's tasks that block the event loop (``worker_block_warning``).

A greenlet ticks every ``threshold_s / 2``; a native watchdog thread samples the main thread's
stack (``sys._current_frames``) and blames a job that stayed on it, with the tick stopped, for
longer than the threshold — or, when one C call kept the watchdog from sampling at all, the job
on the stack right after that gap. NOTE: not gevent's own monitor thread: it traces every
greenlet switch, which costs drain throughput several times over (docs/pools.md); this costs one
wake-up per tick. The task is logged when it ends, with how long it held the hub.
Imports: gevent, pools.base.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

import gevent

from greenq.pools.base import Job

logger = logging.getLogger("greenq.pools.gevent")
BLOCK_SAMPLES = 5  # looks at the hub thread's stack per worker_block_warning interval


class BlockDetector:
    """Watches one GeventPool: it reads ``running()``, ``tick`` (set when the idle pool gets a
    job) and ``wait_busy()``, and writes ``blocked`` (job key -> (longest stall of the hub while
    it ran, CPU seconds the hub used meanwhile)) and ``hub_blocks``. ``run_code``: the code of
    the pool's method that runs one job, to find the job on the hub's stack."""

    def __init__(self, pool: Any, threshold_s: float, run_code: CodeType) -> None:
        self.pool = pool
        self.threshold_s = threshold_s
        self.run_code = run_code
        self.hub_thread = 0

    def start(self) -> None:
        """Start the ticker greenlet and the watchdog thread."""
        from gevent import monkey

        threshold_s = self.threshold_s
        self.pool.tick = time.monotonic()
        self.hub_thread = monkey.get_original("_thread", "get_ident")()  # patched one is per greenlet
        gevent.spawn(self._ticker, threshold_s / 2)
        start_thread = monkey.get_original("_thread", "start_new_thread")
        start_thread(self._watchdog, (threshold_s, monkey.get_original("time", "sleep")))

    def _ticker(self, every_s: float) -> None:
        """The hub's pulse for the watchdog, while jobs run; an idle pool waits for ``submit``
        (no wake-ups: an idle worker's hub sleeps)."""
        while True:
            self.pool.tick = time.monotonic()
            if self.pool.running():
                gevent.sleep(every_s)
            else:
                self.pool.wait_busy()

    def _watchdog(self, threshold_s: float, real_sleep: Callable[[float], None]) -> None:
        """Runs in a native thread: never touches gevent, only reads floats, a CPU clock and a stack.

        Samples the hub thread's stack ``BLOCK_SAMPLES`` times per threshold. A job is blamed
        only when it was on the stack at every sample for longer than the threshold while the
        ticker could not run. NOTE: a stalled ticker alone is not enough: under heavy I/O load
        hundreds of greenlets each run briefly and the ticker waits behind all of them, and
        blaming whichever job happened to be running filled the log with HTTP tasks. The CPU
        the hub thread used meanwhile tells a CPU-bound task from a blocking call.
        """
        cpu_clock = time.pthread_getcpuclockid(self.hub_thread)
        held_key, held_at, held_cpu = None, 0.0, 0.0  # the job seen at every sample since held_at
        last_clock, last_cpu = time.monotonic(), time.clock_gettime(cpu_clock)
        while True:
            # While no job runs there is nothing to blame: one look per threshold, not five.
            real_sleep(threshold_s / BLOCK_SAMPLES if self.pool.running() else threshold_s)
            clock, cpu = time.monotonic(), time.clock_gettime(cpu_clock)
            job = self._job_on_hub_stack()
            key = job.key if job is not None else None
            since = max(last_clock, self.pool.tick)  # the hub's last sign of life before this sample
            if key is not None and key != held_key and self._locked_out(since, clock, cpu - last_cpu):
                # NOTE: one C call (sum(range(10**8))) held the GIL across the whole gap, so this
                # thread could take no sample during it; the job on the hub's stack the moment the
                # GIL came back is the one that held it (issue 26 item 4).
                held_key, held_at, held_cpu = key, since, last_cpu
            last_clock, last_cpu = clock, cpu
            if key is None or key != held_key or self.pool.tick > held_at:
                held_key, held_at, held_cpu = key, clock, cpu  # the hub switched since the last look
                continue
            stall = clock - held_at
            if stall > threshold_s and stall > self.pool.blocked.get(key, (0.0, 0.0))[0]:
                self.pool.blocked[key] = (stall, cpu - held_cpu)

    def _locked_out(self, since: float, until: float, hub_cpu_s: float) -> bool:
        """Was this thread kept from sampling by the hub thread itself holding the GIL?

        Neither a sample nor a tick came for longer than the threshold, and the hub thread
        burnt at least half the threshold of CPU meanwhile. NOTE: the CPU test keeps a process
        that was merely descheduled (overloaded machine) from blaming whatever job was on the
        stack; a C call that blocks without CPU while holding the GIL is missed.
        """
        threshold_s = self.threshold_s
        return until - since > threshold_s and hub_cpu_s >= threshold_s / 2

    def _job_on_hub_stack(self) -> Job | None:
        """The job whose greenlet is running on the hub thread now, if any."""
        frame = sys._current_frames().get(self.hub_thread)
        while frame is not None and frame.f_code is not self.run_code:
            frame = frame.f_back
        return frame.f_locals.get("job") if frame is not None else None

    def report(self, job: Job) -> None:
        """Log ``job`` if the watchdog found it blocking the hub (called as it ends)."""
        found = self.pool.blocked.pop(job.key, None)
        if found is None:
            return
        stall_s, cpu_s = found
        self.pool.hub_blocks += 1
        if cpu_s >= stall_s / 2:
            advice = "mark it @app.task(cpu=True) to run it in a child process"
        else:
            advice = (
                "it used little CPU meanwhile: a blocking call gevent cannot make cooperative "
                "(a C extension?), or an overloaded machine"
            )
        logger.warning(
            "task %s[%s] blocked the event loop for %.2fs (%.2fs of CPU; worker_block_warning=%ss): %s",
            job.task,
            job.request.get("id"),
            stall_s,
            cpu_s,
            self.threshold_s,
            advice,
        )
