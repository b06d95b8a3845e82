"""GeventPool on its own, in this (unpatched) process: gevent's primitives need no patching."""

from __future__ import annotations

import gevent
import gevent.event

from greenq.pools.base import Job, Outcome
from greenq.pools.gevent import GeventPool


def test_every_job_runs_once_never_more_at_once_than_the_concurrency() -> None:
    concurrency, total = 50, 2_000
    running, peak, ran = [0], [0], []
    all_done = gevent.event.Event()

    def runner(job: Job) -> Outcome:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        gevent.sleep(0.001 * (job.key % 3))  # some finish at once, some later, some never yield
        running[0] -= 1
        return Outcome("SUCCESS", payload=str(job.key).encode())

    def on_done(job: Job, outcome: Outcome) -> None:
        assert outcome.payload == str(job.key).encode()
        ran.append(job.key)
        if len(ran) == total:
            all_done.set()

    pool = GeventPool(runner, concurrency)
    pool.start()
    submitted = 0
    while submitted < total:  # as the dispatcher does: only into free slots, in bursts
        for _ in range(min(pool.free_slots(), 37, total - submitted)):
            pool.submit(Job(submitted, "t", [], {}), on_done)
            submitted += 1
        gevent.sleep(0)  # idle workers are woken through the hub, busy ones take jobs directly
    assert all_done.wait(30)
    assert sorted(ran) == list(range(total))
    assert peak[0] == concurrency
    assert pool.free_slots() == concurrency and pool.running() == 0
    pool.kill()


def test_a_killed_idle_worker_is_never_handed_a_job() -> None:
    done = gevent.event.Event()
    pool = GeventPool(lambda job: Outcome("SUCCESS"), 3)
    pool.start()
    gevent.sleep(0)  # all three wait for work
    gevent.killall(pool._workers[1:])  # the last to wait would be woken first
    pool.submit(Job(1, "t", [], {}), lambda job, outcome: done.set())
    assert done.wait(5)  # the one live worker ran it
    pool.kill()
