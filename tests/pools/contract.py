"""The Pool contract (greenq/pools/base.py) as plain checks, run against any pool.

tests/pools/test_contract.py runs them on solo and prefork in pytest's process, and on gevent
in a gevent-patched interpreter, as workers run it: ``python -m tests.pools.patched_contract
DIR`` patches first, runs every check and prints one JSON object {check: null or traceback}.

Jobs coordinate through files in a directory, the only channel that works alike for greenlets,
threads and prefork children: a "hold" job writes ``started-KEY`` and runs until ``release``
exists. Waits poll a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenq.exceptions import SoftTimeLimitExceeded
from greenq.pools.base import Job, Outcome, Pool

CONCURRENCY = {"solo": 1, "gevent": 4, "prefork": 2}
LIMITED = ("gevent", "prefork")  # solo runs jobs inline, for debugging: no time limits
WAIT_S = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)  # cooperative once gevent has patched time


def _hold(folder: Path, key: int, swallow: type[BaseException] | tuple[()]) -> None:
    """Run until the test writes ``release``; ``swallow``: what the body catches and ignores."""
    (folder / f"started-{key}").touch()
    deadline = time.monotonic() + WAIT_S
    while not (folder / "release").exists() and time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except swallow:
            (folder / f"swallowed-{key}").touch()


def run(job: Job) -> Outcome:
    """The runner every pool gets: never raises, like greenq.worker.execute."""
    folder = Path(job.kwargs.get("folder", "."))
    try:
        if job.task == "echo":
            return Outcome("SUCCESS", payload=str(job.key).encode())
        if job.task == "states":
            state, retry_in_s = job.args
            return Outcome(state, payload=b"\x00\xff", retry_in_s=retry_in_s, error=f"{state} on purpose")
        if job.task == "hold":
            _hold(folder, job.key, ())  # catches nothing
        elif job.task == "swallow-everything":
            _hold(folder, job.key, BaseException)
        return Outcome("SUCCESS", payload=str(os.getpid()).encode())
    except SoftTimeLimitExceeded:
        return Outcome("SUCCESS", payload=b"soft limit caught")


def make_runner() -> Callable[[Job], Outcome]:
    """For prefork: a picklable factory, run in each child."""
    return run


def fail(job: Job, exc: BaseException) -> Outcome:
    """The failure factory: what the pool reports for a job it stopped."""
    return Outcome("FAILURE", error=f"{type(exc).__name__}: {exc}")


def make_pool(kind: str) -> Any:
    concurrency = CONCURRENCY[kind]
    if kind == "solo":
        from greenq.pools.solo import SoloPool

        return SoloPool(run)
    if kind == "gevent":
        from greenq.pools.gevent import GeventPool

        return GeventPool(run, concurrency, fail=fail)
    from greenq.pools.prefork import PreforkPool

    return PreforkPool(make_runner, fail, concurrency)


class Collector:
    """on_done for the checks: what came back, and what the pool said at that moment."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.done: list[tuple[Job, Outcome]] = []
        self.seen: list[tuple[int, int]] = []  # (running, free_slots) inside on_done
        self._lock = threading.Lock()

    def __call__(self, job: Job, outcome: Outcome) -> None:
        seen = (self.pool.running(), self.pool.free_slots())
        with self._lock:
            self.done.append((job, outcome))
            self.seen.append(seen)

    def count(self) -> int:
        with self._lock:
            return len(self.done)

    def wait_for(self, count: int) -> None:
        wait_until(lambda: self.count() >= count, f"{count} jobs came back (got {self.count()})")


def submit(pool: Pool, job: Job, on_done: Collector) -> None:
    """``submit`` as the consumer calls it. Solo runs the job inside ``submit``; a thread stands
    in for its caller so that the check can look at the pool while the job runs."""
    assert pool.free_slots() > 0
    if pool.kind == "solo":
        threading.Thread(target=pool.submit, args=(job, on_done), daemon=True).start()
        wait_until(lambda: pool.running() == 1 or on_done.count() > 0, "solo took the job")
    else:
        pool.submit(job, on_done)


def started(folder: Path) -> int:
    return len(list(folder.glob("started-*")))


# ---- the checks ------------------------------------------------------------------------------


def check_each_outcome_comes_back_once_with_its_job(pool: Pool, folder: Path) -> None:
    done = Collector(pool)
    total = 5 * pool.concurrency + 3
    for key in range(total):
        wait_until(lambda: pool.free_slots() > 0, "a slot is free")
        submit(pool, Job(key, "echo", [], {}), done)
    done.wait_for(total)
    assert sorted(job.key for job, _ in done.done) == list(range(total))
    assert all(outcome.payload == str(job.key).encode() for job, outcome in done.done)
    assert all(outcome.state == "SUCCESS" for _, outcome in done.done)


def check_outcome_fields_pass_through_unchanged(pool: Pool, folder: Path) -> None:
    done = Collector(pool)
    for key, (state, retry_in_s) in enumerate([("FAILURE", None), ("RETRY", 2.5)]):
        submit(pool, Job(key, "states", [state, retry_in_s], {}), done)
        done.wait_for(key + 1)
    got = {job.key: outcome for job, outcome in done.done}
    assert (got[0].state, got[0].retry_in_s, got[0].error) == ("FAILURE", None, "FAILURE on purpose")
    assert (got[1].state, got[1].retry_in_s, got[1].error) == ("RETRY", 2.5, "RETRY on purpose")
    assert got[0].payload == got[1].payload == b"\x00\xff" and not got[0].lost


def check_runs_concurrency_jobs_at_once_and_counts_them(pool: Pool, folder: Path) -> None:
    concurrency = pool.concurrency
    assert (pool.running(), pool.free_slots()) == (0, concurrency)
    done = Collector(pool)
    for key in range(concurrency):
        submit(pool, Job(key, "hold", [], {"folder": str(folder)}), done)
    wait_until(lambda: started(folder) == concurrency, f"all {concurrency} jobs run at once")
    assert (pool.running(), pool.free_slots()) == (concurrency, 0)
    assert done.count() == 0
    (folder / "release").touch()
    done.wait_for(concurrency)
    wait_until(lambda: pool.free_slots() == concurrency, "every slot is free again")
    assert pool.running() == 0


def check_a_slot_is_free_before_on_done_runs(pool: Pool, folder: Path) -> None:
    done = Collector(pool)
    submit(pool, Job(1, "echo", [], {}), done)
    done.wait_for(1)
    assert done.seen == [(0, pool.concurrency)], "on_done may submit the next job into this slot"


def check_stop_waits_for_running_jobs_up_to_its_timeout(pool: Pool, folder: Path) -> None:
    done = Collector(pool)
    submit(pool, Job(1, "hold", [], {"folder": str(folder)}), done)
    wait_until(lambda: started(folder) == 1, "the job started")
    assert pool.stop(0.2) is False, "stop() said all finished while a job ran"
    assert done.count() == 0
    (folder / "release").touch()
    assert pool.stop(WAIT_S) is True
    assert done.count() == 1 and pool.running() == 0


def check_hard_time_limit_ends_the_job_whatever_it_catches(pool: Pool, folder: Path) -> None:
    """The job catches BaseException and carries on: the pool still reports TimeLimitExceeded
    through ``fail`` and frees the slot (gevent abandons the greenlet, prefork kills the child)."""
    done = Collector(pool)
    job = Job(1, "swallow-everything", [], {"folder": str(folder)}, time_limit=0.3)
    submit(pool, job, done)
    done.wait_for(1)
    [(_, outcome)] = done.done
    assert outcome.state == "FAILURE" and outcome.error is not None
    assert outcome.error.startswith("TimeLimitExceeded: swallow-everything exceeded time_limit=0.3s")
    wait_until(lambda: pool.free_slots() == pool.concurrency, "the slot is free again")
    (folder / "release").touch()  # the abandoned greenlet, if any, ends now
    submit(pool, Job(2, "echo", [], {}), done)
    done.wait_for(2)


def check_soft_time_limit_raises_inside_the_job(pool: Pool, folder: Path) -> None:
    done = Collector(pool)
    submit(pool, Job(1, "hold", [], {"folder": str(folder)}, soft_time_limit=0.2), done)
    done.wait_for(1)
    assert done.done[0][1].payload == b"soft limit caught"


CHECKS: dict[str, Callable[[Pool, Path], None]] = {
    name.removeprefix("check_"): check for name, check in globals().items() if name.startswith("check_")
}
LIMIT_CHECKS = ("hard_time_limit_ends_the_job_whatever_it_catches", "soft_time_limit_raises_inside_the_job")


def run_check(kind: str, name: str, folder: Path) -> None:
    """One check on a fresh, started pool; the pool is stopped afterwards."""
    pool = make_pool(kind)
    pool.start()
    try:
        CHECKS[name](pool, folder)
    finally:
        (folder / "release").touch()
        pool.stop(WAIT_S)
        if hasattr(pool, "kill"):
            pool.kill()


def main(root: str) -> None:
    """Run every check on GeventPool; print {check: its traceback, or None if it passed}."""
    import json

    report: dict[str, str | None] = {}
    for name in CHECKS:
        folder = Path(root) / name
        folder.mkdir()
        try:
            run_check("gevent", name, folder)
            report[name] = None
        except BaseException:
            report[name] = traceback.format_exc()
    print(json.dumps(report), flush=True)
