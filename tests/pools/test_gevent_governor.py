"""HubGovernor on a real GeventPool in this (unpatched) process: a saturated hub runs fewer short
tasks at once, tasks that wait on sockets keep the full concurrency, long waiters keep their
slots beside short ones, and an idle pool starts over at -c."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import gevent.event
import pytest

from greenq.pools import gevent_governor
from greenq.pools.base import Job, Outcome
from greenq.pools.gevent import GeventPool
from greenq.pools.gevent_governor import FLOOR, HubGovernor


def _burn(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


class _Load:
    """Submits ``total`` jobs as the dispatcher does (into free slots, in bursts) and counts how
    many run at once, with the pool's limit at the same moment."""

    def __init__(self, pool: GeventPool, total: int) -> None:
        self.pool, self.total = pool, total
        self.running, self.ran = 0, [0] * total
        self.seen: list[tuple[int, int]] = []  # (running at once, limit) at each job's start
        self.done = gevent.event.Event()
        self.finished = 0

    def enter(self) -> None:
        self.running += 1
        self.seen.append((self.running, self.pool.limit))

    def leave(self) -> None:
        self.running -= 1

    def on_done(self, job: Job, outcome: Outcome) -> None:
        self.ran[job.key] += 1
        self.finished += 1
        if self.finished == self.total:
            self.done.set()

    def feed(self) -> None:
        submitted = 0
        while submitted < self.total:
            for _ in range(min(self.pool.free_slots(), 64, self.total - submitted)):
                self.pool.submit(Job(submitted, "t", [], {}, started=time.time()), self.on_done)
                submitted += 1
            gevent.sleep(0.0005)


def _governed_run(concurrency: int, total: int, body: Callable[[Job], None]) -> tuple[GeventPool, _Load]:
    """``total`` jobs of ``body`` through a governed pool of ``concurrency``; each ran once."""
    load: _Load

    def runner(job: Job) -> Outcome:
        load.enter()
        body(job)
        load.leave()
        return Outcome("SUCCESS")

    pool = GeventPool(runner, concurrency)
    load = _Load(pool, total)
    pool.start()
    pool.enable_governor()
    feeder = gevent.spawn(load.feed)
    assert load.done.wait(60)
    feeder.join()
    assert load.ran == [1] * total  # every job ran, once
    return pool, load


def test_a_saturated_hub_runs_fewer_short_tasks_at_once_and_loses_none() -> None:
    """Tasks of ~0.3 ms of CPU, half of them then waiting 1 ms on a timer: the hub never idles.
    The governor lowers the limit, and from then on no more than the limit run at once."""
    concurrency = 200

    def body(job: Job) -> None:
        _burn(0.0003)
        if job.key % 2:
            gevent.sleep(0.001)

    _, load = _governed_run(concurrency, 8_000, body)
    lowest = min(limit for _, limit in load.seen)
    assert lowest < concurrency // 4, f"the limit never went below {lowest}"
    later = load.seen[len(load.seen) // 2 :]  # once the governor has had its first looks
    assert max(running for running, _ in later) < concurrency // 2
    assert all(running <= limit + 1 for running, limit in later)  # +1: the one that just started


def test_a_burst_is_looked_at_within_milliseconds_not_a_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """With periods of a minute, the governor still decides on a new burst at once: its first
    look comes milliseconds after the pool gets busy (each short task started before then would,
    in a worker, open a connection of its own)."""
    monkeypatch.setattr(gevent_governor, "PERIOD_S", 60.0)
    looked = gevent.event.Event()

    class Watched(HubGovernor):
        def adjust(self, share: float, rate: float) -> None:
            looked.set()
            super().adjust(share, rate)

    monkeypatch.setattr(gevent_governor, "HubGovernor", Watched)  # what enable_governor() starts
    done = gevent.event.Event()
    pool = GeventPool(lambda job: (_burn(0.0003), Outcome("SUCCESS"))[1], 50)
    pool.start()
    pool.enable_governor()
    gevent.sleep(0.01)  # the governor waits for work
    assert not looked.is_set()
    for key in range(200):
        pool.submit(Job(key, "t", [], {}), lambda job, outcome: done.set() if job.key == 199 else None)
    assert looked.wait(10), "no look within 10 s of the burst: it waited for a 60 s period"
    assert done.wait(30)
    pool.kill()


def test_tasks_waiting_on_sockets_keep_the_full_concurrency() -> None:
    """Each task waits 200 ms: the hub idles, so all of -c run at once."""
    concurrency = 100
    pool, load = _governed_run(concurrency, 400, lambda job: gevent.sleep(0.2))
    assert max(running for running, _ in load.seen) == concurrency
    assert pool.limit == concurrency


def _waiting_jobs(concurrency: int, jobs: int, started: float) -> tuple[GeventPool, gevent.event.Event]:
    """A pool of ``concurrency`` running ``jobs`` jobs (started at ``started``) that each wait
    for the returned event."""
    release = gevent.event.Event()

    def runner(job: Job) -> Outcome:
        release.wait()
        return Outcome("SUCCESS")

    pool = GeventPool(runner, concurrency)
    pool.start()
    for key in range(jobs):
        pool.submit(Job(key, "t", [], {}, started=started), lambda job, outcome: None)
    gevent.sleep(0.01)  # they run, waiting
    return pool, release


def test_jobs_running_long_keep_their_slots_beside_the_short_ones() -> None:
    """Little's law for the short jobs, plus every job running longer than two periods."""
    waiters = 30
    pool, release = _waiting_jobs(100, waiters, started=time.time() - 10)
    governor = HubGovernor(pool)
    pool.fastest = 0.0001  # 2 x 20,000/s x 0.1 ms: 4 short ones keep the hub busy
    governor.adjust(share=1.0, rate=20_000)
    assert pool.limit == 4 + waiters  # not FLOOR: the waiters do not count against the short ones
    pool.fastest = 0.0001
    governor.adjust(share=1.0, rate=20_000)
    assert pool.limit == 4 + waiters
    release.set()
    gevent.sleep(0.01)  # the waiters end
    pool.fastest = 0.0001
    governor.adjust(share=1.0, rate=20_000)
    assert pool.limit == FLOOR
    pool.kill()


def test_the_limit_falls_at_most_by_half_of_what_runs_per_look() -> None:
    """One saturated look cannot cut the running jobs by more than half; a pool running far
    fewer jobs than -c (its first fill) is capped from what runs, not from -c."""
    running = 80
    pool, release = _waiting_jobs(500, running, started=time.time())  # short ones, just started
    assert pool.in_greenlets() == running
    governor = HubGovernor(pool)
    for expected in (running // 2, running // 4, FLOOR):
        pool.fastest = 0.0001  # Little's law says 4: the floor
        governor.adjust(share=1.0, rate=20_000)
        assert pool.limit == expected
    release.set()
    pool.kill()


@pytest.mark.parametrize("share", [0.5, 0.89])
def test_an_idle_hub_raises_the_limit_back_towards_the_concurrency(share: float) -> None:
    pool = GeventPool(lambda job: Outcome("SUCCESS"), 100)
    governor = HubGovernor(pool)
    pool.set_limit(16)
    governor.adjust(share=share, rate=1_000)
    assert pool.limit == 16 + 8 + 1
    for _ in range(10):
        governor.adjust(share=share, rate=1_000)
    assert pool.limit == 100  # never above -c


def test_a_pool_idle_for_a_second_starts_over_at_the_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gevent_governor, "IDLE_RESET_S", 0.05)
    done = gevent.event.Event()
    pool = GeventPool(lambda job: Outcome("SUCCESS"), 50)
    pool.start()
    pool.enable_governor()
    pool.set_limit(16)  # as a saturated burst left it
    gevent.sleep(0.2)  # idle, longer than IDLE_RESET_S
    pool.submit(Job(1, "t", [], {}), lambda job, outcome: done.set())
    assert done.wait(5)
    gevent.sleep(0.01)  # the governor wakes with the pool
    assert pool.limit == 50
    pool.kill()


def test_tasks_of_10_ms_or_more_are_not_capped_even_on_a_saturated_hub() -> None:
    """Their throughput is bound by the body, not by the hub's rounds: the cap stays at -c, and
    one a burst of short tasks left goes back up."""
    pool = GeventPool(lambda job: Outcome("SUCCESS"), 100)
    governor = HubGovernor(pool)
    pool.fastest = 0.1
    governor.adjust(share=1.0, rate=1_000)
    assert pool.limit == 100
    pool.set_limit(16)
    pool.fastest = 0.1
    governor.adjust(share=1.0, rate=1_000)
    assert pool.limit == 25
    pool.fastest = 0.001  # short again: capped again
    governor.adjust(share=1.0, rate=1_000)
    assert pool.limit == FLOOR
