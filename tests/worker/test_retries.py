"""Retries, durable ETA/countdown, priorities and revoke, against real workers and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from greenq import GreenQ, TaskError, TaskRevoked
from greenq.broker.keys import Keys
from greenq.embedded import RedisServer, bundled_binary
from tests.apps import basic

ROOT = Path(__file__).resolve().parent.parent.parent


def test_self_retry_counts_retries_and_then_succeeds(app: GreenQ, r: redis.Redis, start_worker) -> None:
    start_worker("-c", "5")
    result = basic.flaky.delay("fl", 2)
    assert result.get(timeout=20) == 2
    assert r.lrange("seen-retries:fl", 0, -1) == [b"0", b"1", b"2"]
    assert result.info["retries"] == 2


def test_past_max_retries_fails_with_the_original_exception(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    start_worker("-c", "5")
    result = basic.flaky.delay("mx", 99)
    with pytest.raises(TaskError) as info:
        result.get(timeout=30)
    assert info.value.exc_type == "OSError" and info.value.exc_message == "attempt 6"
    assert int(r.hget("runs:mx", result.id)) == 6  # the first run + max_retries=5


def test_autoretry_with_backoff_then_failure(app: GreenQ, r: redis.Redis, start_worker) -> None:
    worker = start_worker("-c", "5")
    result = basic.always_fails.delay("auto")
    with pytest.raises(TaskError, match="still broken"):
        result.get(timeout=30)
    assert int(r.hget("runs:auto", result.id)) == 4
    assert len([line for line in worker.lines if "retry" in line and result.id in line]) == 3


def test_retry_state_is_visible_between_attempts(app: GreenQ, start_worker) -> None:
    start_worker("-c", "5")
    result = basic.flaky.delay("vis", 1)
    found = app.broker.wait_result(result.id, 10)
    assert found is not None and b'"state":"RETRY"' in found[1]
    assert result.get(timeout=10) == 1


@pytest.mark.chaos
def test_sigkill_during_a_burst_of_retries_loses_nothing(app: GreenQ, r: redis.Redis, start_worker) -> None:
    victim = start_worker("-c", "50", "--lost-timeout", "2")
    results = basic.always_fails.map([("burst",)] * 300)
    results[0].get(timeout=30, propagate=False)
    victim.signal(signal.SIGKILL)
    victim.wait()
    start_worker("-c", "50", "--lost-timeout", "2")
    for result in results:
        assert result.get(timeout=60, propagate=False).exc_type == "OSError"
    runs = {k.decode(): int(v) for k, v in r.hgetall("runs:burst").items()}
    assert len(runs) == 300
    # acks_late: a run interrupted by the kill may repeat, but no retry is ever lost or doubled
    assert all(4 <= count <= 5 for count in runs.values()), sorted(set(runs.values()))


@pytest.mark.chaos
def test_thousand_eta_tasks_survive_worker_restarts_and_run_once_on_time(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    due = time.time() + 30  # far later than the restarts below take, even on a loaded machine
    results = app.enqueue_many([(basic.on_time, ("eta",), None)] * 1000, eta=due)
    assert r.zcard(Keys.delayed("default")) == 1000
    for _ in range(2):
        workers = [start_worker("-c", "100") for _ in range(3)]
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(30) == 0
        assert r.zcard(Keys.delayed("default")) == 1000, "nothing was held in worker memory"
    for _ in range(3):
        start_worker("-c", "200")
    assert time.time() < due, "the restarts outlasted the ETA: the test proves nothing"
    assert r.zcard(Keys.delayed("default")) == 1000
    lateness = sorted(result.get(timeout=90) for result in results)
    runs = r.hgetall("runs:eta")
    assert len(runs) == 1000 and {int(v) for v in runs.values()} == {1}
    assert lateness[0] >= -0.01, "a task ran before its ETA"
    # Correctness, not speed: due messages are moved by every worker's tick (aim: 100 ms); a
    # bound of seconds catches an ETA left to a restart, a recovery or a missed tick.
    assert lateness[-1] < 5.0, f"the last of 1,000 ETA tasks started {lateness[-1]:.1f}s late"


def test_pending_eta_tasks_fire_after_a_redis_restart_under_a_running_worker(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker, tmp_path, monkeypatch
) -> None:
    broker = RedisServer(bundled_binary(), data_dir=str(tmp_path), appendonly=True).start()
    try:
        monkeypatch.setenv("GREENQ_BROKER_URL", broker.url)
        basic.app._settings = None
        basic.app._broker = None
        worker = start_worker("-c", "20", url=broker.url, env={"COUNTER_URL": redis_url})
        due = time.time() + 5
        results = basic.on_time.map([("aof",)] * 20, eta=due)
        broker.kill()  # while all 20 wait in the delayed set and the worker runs
        worker.wait_for("unavailable")
        broker.start()
        basic.app.close()
        target = redis.Redis.from_url(broker.url)
        pending = target.zcard(Keys.delayed("default"))
        target.close()
        assert time.time() < due, "Redis came back after the ETA: the test proves nothing"
        assert pending == 20 and r.hlen("runs:aof") == 0, "the ETAs were pending across the restart"
        lateness = sorted(result.get(timeout=60) for result in results)
        assert lateness[0] >= -0.01, "a task ran before its ETA"
        assert lateness[-1] < 5.0, f"the last ETA task started {lateness[-1]:.1f}s late"
        runs = r.hgetall("runs:aof")
        assert len(runs) == 20 and {int(v) for v in runs.values()} == {1}
        assert worker.proc.poll() is None
    finally:
        broker.stop()


def test_high_priority_task_starts_before_the_remaining_low_priority_backlog(
    app: GreenQ, start_worker
) -> None:
    low = basic.count_sleep.map([("prio", 0.05)] * 40)
    start_worker("--pool", "solo", "--prefetch-multiplier", "1")
    low[0].get(timeout=20)
    high = basic.count_sleep.apply_async(("prio", 0.0), priority=9)
    high.get(timeout=20)
    done_high = high.info["date_done"]
    later = [res for res in low if res.get(timeout=30) and res.info["date_done"] > done_high]
    assert len(later) >= 30, "the high-priority task jumped the low-priority backlog"


def test_revoked_tasks_are_skipped_by_any_worker(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker
) -> None:
    keep = basic.count_run.delay("rev")
    drop = basic.count_run.delay("rev")
    drop_late = basic.count_run_late.delay("rev")
    app.control.revoke(drop.id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    cli = subprocess.run(
        [sys.executable, "-m", "greenq", "revoke", drop_late.id, "--broker", redis_url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 0 and cli.stdout.startswith(f"{drop_late.id}: unknown so far")
    start_worker("-c", "5")
    assert keep.get(timeout=10) == keep.id
    for result in (drop, drop_late):
        with pytest.raises(TaskRevoked):
            result.get(timeout=10)
        assert result.state == "REVOKED"
    assert list(r.hgetall("runs:rev")) == [keep.id.encode()]
    assert r.xlen(Keys.stream("default")) == 0
