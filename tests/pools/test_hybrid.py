"""Hybrid gevent workers: cpu=True tasks in child processes, and hub-blocking detection."""

from __future__ import annotations

import os

from greenq import GreenQ
from tests.apps import basic


def test_cpu_tasks_go_to_unpatched_children_while_io_tasks_stay_in_greenlets(
    app: GreenQ, start_worker
) -> None:
    worker = start_worker("--pool", "gevent", "-c", "50", "--cpu-workers", "2")
    worker.wait_for("hybrid: up to 2 child processes")
    cpu = basic.burn.map([(100_000,)] * 6)
    io = basic.whoami.map([()] * 6)
    cpu_pids = {res.get(timeout=30) for res in cpu}
    assert {res.get(timeout=30) for res in io} == {worker.pid}
    assert worker.pid not in cpu_pids and len(cpu_pids) <= 2
    assert basic.socket_module.delay().get(timeout=10) == "gevent._socket3"
    # The children yield the CPU to the event loop: niceness +10 (worker_cpu_nice) over the worker's.
    assert basic.niceness_in_child.delay().get(timeout=30) == os.getpriority(os.PRIO_PROCESS, worker.pid) + 10


def test_cpu_nice_zero_keeps_children_at_the_workers_priority(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "gevent", "-c", "5", "--cpu-workers", "1", "--cpu-nice", "0")
    worker.wait_for(r"hybrid: up to 1 child processes for cpu=True tasks \(nice \+0\)")
    assert basic.niceness_in_child.delay().get(timeout=30) == os.getpriority(os.PRIO_PROCESS, worker.pid)


def test_routes_with_pool_prefork_go_to_children(app: GreenQ, start_worker) -> None:
    worker = start_worker(
        "--pool",
        "gevent",
        "-c",
        "10",
        "--cpu-workers",
        "1",
        env={"GREENQ_TASK_ROUTES": '{"tests.apps.basic.whoami": {"pool": "prefork"}}'},
    )
    assert basic.whoami.delay().get(timeout=30) != worker.pid


def test_blocking_task_is_logged_and_the_same_work_with_cpu_true_is_not(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "gevent", "-c", "10", "--cpu-workers", "1")
    assert basic.busy_loop_cpu.delay(0.5).get(timeout=30) != worker.pid
    assert basic.busy_loop.delay(0.5).get(timeout=30) == worker.pid
    match = worker.wait_for(r"task (\S+)\[\w+\] blocked the event loop for ([\d.]+)s \(([\d.]+)s of CPU")
    assert match.group(1) == "tests.apps.basic.busy_loop"
    # The CPU it used is reported (less than the wall time when other processes share the cores).
    assert 0 < float(match.group(3)) <= float(match.group(2)) * 1.2
    # The advice follows the CPU share, which other processes on the cores can halve.
    assert "mark it @app.task(cpu=True)" in match.string or "an overloaded machine" in match.string
    assert float(match.group(2)) >= 0.1  # a lower bound: the monitor thread samples
    assert "busy_loop_cpu" not in "".join(line for line in worker.lines if "blocked the event loop" in line)
