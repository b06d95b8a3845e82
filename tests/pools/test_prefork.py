"""The prefork pool through a real worker: child processes, limits, recycling, lost children."""

from __future__ import annotations

import time

import pytest
import redis

from greenq import GreenQ, TaskError, TaskRevoked
from greenq.broker.keys import Keys
from tests.apps import basic


def test_cpu_tasks_run_in_child_processes_unpatched(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "prefork", "-c", "2")
    pids = {res.get(timeout=30) for res in basic.burn.map([(200_000,)] * 8)}
    assert worker.pid not in pids and 1 <= len(pids) <= 2
    assert basic.socket_module.delay().get(timeout=10) == "socket"


def test_hard_time_limit_kills_and_replaces_the_child(app: GreenQ, start_worker) -> None:
    start_worker("--pool", "prefork", "-c", "1")
    before = basic.whoami.delay().get(timeout=20)
    with pytest.raises(TaskError) as info:
        basic.spin_forever.delay().get(timeout=20)
    assert info.value.exc_type == "TimeLimitExceeded"
    after = basic.whoami.delay().get(timeout=20)
    assert after != before


def test_soft_time_limit_raises_inside_the_task(app: GreenQ, start_worker) -> None:
    start_worker("--pool", "prefork", "-c", "1")
    assert basic.soft_limited.delay().get(timeout=20) == "cleaned up"


def test_max_tasks_per_child_recycles_children(app: GreenQ, start_worker) -> None:
    start_worker("--pool", "prefork", "-c", "1", "--max-tasks-per-child", "2")
    pids = [basic.whoami.delay().get(timeout=20) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_max_memory_per_child_recycles_after_the_task_that_crossed_it(app: GreenQ, start_worker) -> None:
    start_worker("--pool", "prefork", "-c", "1", "--max-memory-per-child", "150000")
    first = basic.whoami.delay().get(timeout=20)
    assert basic.hog.delay(200).get(timeout=20) == first
    assert basic.whoami.delay().get(timeout=20) != first


def test_lost_child_without_acks_late_fails_with_worker_lost(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "prefork", "-c", "1")
    with pytest.raises(TaskError) as info:
        basic.exit_process.delay().get(timeout=20)
    assert info.value.exc_type == "WorkerLostError"
    assert basic.add.delay(1, 2).get(timeout=20) == 3
    assert worker.proc.poll() is None


def test_lost_child_with_acks_late_is_requeued_until_max_deliveries(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    worker = start_worker("--pool", "prefork", "-c", "1", env={"GREENQ_MAX_DELIVERIES": "3"})
    result = basic.exit_process_late.delay("child")
    worker.wait_for("dead-lettered|lost with its process", count=3)
    assert basic.add.delay(1, 2).get(timeout=20) == 3
    assert int(r.get("deaths:child")) == 3
    dead = r.xrange(Keys.dead("default"))
    assert len(dead) == 1 and dead[0][1][b"reason"] == b"delivery 3 killed its worker"
    # Dead-lettered, and its caller is told so instead of waiting for ever.
    with pytest.raises(TaskError) as failed:
        result.get(timeout=10)
    assert failed.value.exc_type == "DeadLettered"
    assert failed.value.exc_message == "its delivery killed the worker max_deliveries times"


def test_revoke_with_terminate_kills_a_running_task_in_its_child(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "prefork", "-c", "1", "--lost-timeout", "2")
    before = basic.whoami.delay().get(timeout=20)
    stuck = basic.busy_loop.delay(60.0)
    deadline = time.monotonic() + 20
    while not any(a["id"] == stuck.id for w in _workers(app) for a in w.get("active", [])):
        assert time.monotonic() < deadline
        time.sleep(0.05)  # the heartbeat lists it once it runs (refreshed every 0.5 s)
    app.control.revoke(stuck.id, terminate=True)
    with pytest.raises(TaskRevoked):
        stuck.get(timeout=20)
    assert stuck.info["exc_message"] == "terminated"
    assert basic.whoami.delay().get(timeout=20) != before  # the child was replaced
    assert worker.proc.poll() is None


def _workers(app: GreenQ) -> list:
    from greenq import admin

    return admin.workers(app.broker)
