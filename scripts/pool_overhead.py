"""CPU per job of the gevent pool itself: hand-off to a greenlet, a short wait, completion.

    python scripts/pool_overhead.py [--jobs 100000] [--concurrency 500] [--repeats 3]

No Redis and no queue: a feeder submits jobs into free slots as the dispatcher does, each job
sleeps 1 ms (so its greenlet waits in the hub like an I/O task), and the process CPU per job is
printed, median of the repeats. A bare 1 ms ``gevent.sleep`` from the same number of greenlets
is printed alongside: the difference is what the pool costs per job.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from greenq.pools.base import Job, Outcome  # noqa: E402
from greenq.pools.gevent import GeventPool  # noqa: E402

NAP_S = 0.001


def cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def through_pool(jobs: int, concurrency: int) -> float:
    """CPU seconds per job through a GeventPool."""
    done, finished = gevent.event.Event(), [0]

    def runner(job: Job) -> Outcome:
        gevent.sleep(NAP_S)
        return Outcome("SUCCESS")

    def on_done(job: Job, outcome: Outcome) -> None:
        finished[0] += 1
        if finished[0] == jobs:
            done.set()

    pool = GeventPool(runner, concurrency)
    pool.start()

    def feed() -> None:
        for key in range(jobs):
            while not pool.free_slots():
                gevent.sleep(NAP_S / 2)
            pool.submit(Job(key, "bench", [], {}), on_done)

    started = cpu_s()
    feeder = gevent.spawn(feed)
    if not done.wait(60 + jobs / 1000):
        raise SystemExit(f"only {finished[0]:,} of {jobs:,} jobs finished in time")
    spent = cpu_s() - started
    feeder.kill()
    pool.kill()
    return spent / jobs


def bare(jobs: int, concurrency: int) -> float:
    """CPU seconds per 1 ms sleep from ``concurrency`` greenlets, without a pool."""
    left = iter(range(jobs))

    def loop() -> None:
        for _ in left:
            gevent.sleep(NAP_S)

    started = cpu_s()
    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)], timeout=60 + jobs / 1000)
    return (cpu_s() - started) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name, measure in (("GeventPool", through_pool), ("bare gevent.sleep", bare)):
        runs = []
        for repeat in range(args.repeats):
            runs.append(measure(args.jobs, args.concurrency))
            print(f"  {name} run {repeat + 1}: {runs[-1] * 1e6:.1f} µs", flush=True)
        print(f"{name}: {statistics.median(runs) * 1e6:.1f} µs of CPU per job (median of {args.repeats})")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.1f} s)")
