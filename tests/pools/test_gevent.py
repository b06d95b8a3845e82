"""GeventPool on its own in this (unpatched) process, where gevent's primitives need no patching;
then hard time limits and hub-block detection in real gevent worker subprocesses."""

from __future__ import annotations

import time

import gevent
import gevent.event

from greenq import admin
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


def test_hard_time_limit_ends_a_gevent_task_that_catches_exception(evidence, r, start_worker) -> None:
    """``except Exception:`` around a sleep must not keep the task alive past its time_limit."""
    worker = start_worker("--pool", "gevent", "-c", "1", app="tests.apps.evidence")
    result = evidence.swallows_exception.delay("exc")
    error = result.get(timeout=5, propagate=False)  # the body alone would take 20 s
    assert result.state == "FAILURE" and error.exc_type == "TimeLimitExceeded"
    assert "exceeded time_limit=0.5s" in error.exc_message
    assert r.get("started:exc") == b"1" and r.get("finished:exc") is None
    assert evidence.whoami.delay().get(timeout=10) == worker.pid  # its only slot is free again


def test_a_gevent_task_that_swallows_its_hard_limit_loses_its_slot(evidence, r, start_worker) -> None:
    worker = start_worker("--pool", "gevent", "-c", "1", app="tests.apps.evidence")
    result = evidence.swallows_everything.delay("all")
    error = result.get(timeout=8, propagate=False)  # the body alone would take 8 s
    assert result.state == "FAILURE" and error.exc_type == "TimeLimitExceeded"
    assert int(r.get("swallowed:all")) >= 1  # it did catch the limit, and was failed anyway
    assert evidence.whoami.delay().get(timeout=10) == worker.pid  # a new greenlet has the slot
    assert r.get("finished:all") is None
    worker.wait_for(r"task tests\.apps\.evidence\.swallows_everything\[\w+\] still runs .* after its hard")


def test_one_long_c_call_that_blocks_the_hub_is_logged_with_its_name(evidence, start_worker) -> None:
    """sum(range(n)) holds the GIL throughout, so the watchdog thread takes no sample during it;
    the gap itself must be blamed on the task (issue 26 item 4)."""
    worker = start_worker("--pool", "gevent", "-c", "5", app="tests.apps.evidence")
    n = 30_000_000  # ~0.6 s of one C call here, six times the default worker_block_warning
    assert evidence.one_long_c_call.delay(n).get(timeout=60) == n * (n - 1) // 2
    match = worker.wait_for(r"task (\S+)\[(\w+)\] blocked the event loop for ([\d.]+)s")
    assert match.group(1) == "tests.apps.evidence.one_long_c_call"
    assert float(match.group(3)) > 0.1
    blocks = [line for line in worker.lines if "blocked the event loop" in line]
    assert len(blocks) == 1, blocks
    deadline = time.monotonic() + 15
    while [w.get("hub_blocks") for w in admin.workers(evidence.app.broker)] != [1]:  # the heartbeat
        assert time.monotonic() < deadline, admin.workers(evidence.app.broker)
        time.sleep(0.05)


def test_the_first_fill_lets_the_hub_run_between_slices() -> None:
    """A first batch of hundreds is handed out in slices: tasks already started get their turn
    (the hub reads sockets, finishes them) before the last ones start, instead of every task
    running to its first blocking call first. Each task here works ~0.2 ms, then yields."""
    concurrency = 200
    events: list[str] = []
    all_done = gevent.event.Event()

    def runner(job: Job) -> Outcome:
        events.append("start")
        until = time.perf_counter() + 0.0002
        while time.perf_counter() < until:  # the work before its first blocking call
            pass
        gevent.sleep(0)
        events.append("done")
        return Outcome("SUCCESS")

    def on_done(job: Job, outcome: Outcome) -> None:
        if events.count("done") == concurrency:
            all_done.set()

    pool = GeventPool(runner, concurrency)
    pool.start()
    gevent.sleep(0)  # every worker waits for work
    for key in range(concurrency):
        pool.submit(Job(key, "t", [], {}), on_done)
    assert all_done.wait(30)
    first_done = events.index("done")
    last_start = len(events) - 1 - events[::-1].index("start")
    assert first_done < last_start, "every task started before any finished"
    pool.kill()
