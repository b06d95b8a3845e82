"""HubGovernor: how many short tasks a gevent pool runs at once while its event loop is saturated.

A hub that never idles cannot finish tasks sooner by starting more of them. Each one it adds
waits longer for the CPU, holds one more connection to whatever it calls (Redis, a database, an
API), and makes every round of the hub longer, so the worker's own loops (fetch, dispatch, the
flusher) get their turn less often and move tasks in larger, lumpier waves. While the hub
thread wants the CPU all the time, the governor sets the pool's ``limit`` by Little's law: the
tasks finished per second times the shortest task's run time (what a task takes when it does
not wait for the CPU), doubled for headroom, plus every job that has been running longer than
two periods (a task waiting on a slow socket keeps its slot and does not count against the
short ones). When the hub has idle time (its tasks wait on sockets), the limit goes back up
towards ``-c`` in steps, as it does when even the shortest task takes 10 ms or more (then the
hub's rounds are not what bounds the throughput); a pool idle for a second starts over at
``-c``. A look lowers the limit by at most half of the jobs running then. The first look at a
burst comes after 5 ms, not a period: until then every short task started opens a connection of
its own for its body (a redis-py connect costs CPU worth several round trips), hundreds at -c 500.
Figures: docs/pools.md, "Adaptive concurrency".

Saturation is read from the kernel's scheduler statistics of the hub thread: time on a CPU plus
time waiting for one, so a worker on an overloaded machine reads as saturated too (CPU time
alone would read as idle). Where ``/proc/thread-self/schedstat`` is missing, CPU time alone.
Imports: gevent only.
"""

from __future__ import annotations

import io
import math
import time
from typing import Protocol

import gevent

PERIOD_S = 0.1  # one look at the hub per period while jobs run
FIRST_LOOK_S = 0.005  # the first look at a burst: its first tasks each open their own connections
SATURATED = 0.95  # share of a period the hub thread ran or waited to run: at or above, saturated
IDLE = 0.9  # below: the hub waited for sockets, raise the limit
HEADROOM = 2.0  # the limit is this many times what Little's law says keeps the hub busy
IDLE_RESET_S = 1.0  # a pool idle this long starts over at -c
FLOOR = 16  # the limit never goes below this (or -c, if smaller)
SHORT_S = 0.01  # the cap is for short tasks: when even the shortest takes longer, it stays at -c


class Governed(Protocol):
    """What the governor reads and sets on a pool (GeventPool)."""

    concurrency: int
    limit: int
    finished: int  # jobs ended so far
    fastest: float  # the shortest timed job's seconds since the governor last reset it

    def set_limit(self, limit: int) -> None: ...
    def running(self) -> int: ...
    def in_greenlets(self) -> int: ...
    def running_longer_than(self, seconds: float) -> int: ...
    def wait_busy(self) -> None: ...


class _Demand:
    """Seconds the calling thread ran or waited to run, from the kernel (or its CPU time)."""

    def __init__(self) -> None:
        self._file: io.FileIO | None
        try:
            self._file = open("/proc/thread-self/schedstat", "rb", buffering=0)  # noqa: SIM115
        except OSError:
            self._file = None

    def __call__(self) -> float:
        if self._file is None:
            return time.thread_time()
        self._file.seek(0)
        ran_ns, waited_ns, _ = self._file.read(100).split()
        return (int(ran_ns) + int(waited_ns)) / 1e9


class HubGovernor:
    """Sets the pool's limit once per period; ``run`` is its greenlet's loop."""

    def __init__(self, pool: Governed) -> None:
        self.pool = pool
        self.floor = min(pool.concurrency, FLOOR)

    def run(self) -> None:
        pool = self.pool
        demand = _Demand()  # opened here: in the hub's thread, the one it measures
        while True:
            period = PERIOD_S
            if pool.running() == 0:
                idle_from = time.perf_counter()
                pool.wait_busy()
                if time.perf_counter() - idle_from > IDLE_RESET_S:
                    pool.set_limit(pool.concurrency)  # a new burst may be all waiting on sockets
                period = FIRST_LOOK_S
            wanted, clock, finished = demand(), time.perf_counter(), pool.finished
            pool.fastest = math.inf
            gevent.sleep(period)
            elapsed = time.perf_counter() - clock
            self.adjust((demand() - wanted) / elapsed, (pool.finished - finished) / elapsed)

    def adjust(self, share: float, rate: float) -> None:
        """One period's decision: ``share`` of it the hub thread ran or waited to run, ``rate``
        jobs finished per second in it (and ``pool.fastest``, the shortest of them)."""
        pool = self.pool
        short = pool.fastest < SHORT_S
        long = not short and pool.fastest < math.inf  # tasks finished, none of them short
        if share >= SATURATED and rate > 0 and short:
            wanted = math.ceil(HEADROOM * rate * pool.fastest) + pool.running_longer_than(2 * PERIOD_S)
            target = max(self.floor, min(pool.concurrency, wanted))
            if target != pool.limit:
                # At most halved per period, from what runs now: the first fill runs far fewer
                # than -c, and halving -c would take periods to reach it (each new task body's
                # connection opened meanwhile costs CPU).
                pool.set_limit(max(target, min(pool.limit, pool.in_greenlets()) // 2))
        elif (share < IDLE or long) and pool.limit < pool.concurrency:
            pool.set_limit(min(pool.concurrency, pool.limit + pool.limit // 2 + 1))
