"""``greenq worker --processes N``: a supervisor over N patched worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from greenq import GreenQ, admin
from tests.apps import basic

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.chaos


def _members(app: GreenQ, count: int) -> list[dict]:
    """Wait until ``count`` group members have heartbeats (they register at start)."""
    deadline = time.monotonic() + 30
    while True:
        members = [w for w in admin.workers(app.broker) if w.get("group")]
        if len(members) == count:
            return members
        assert time.monotonic() < deadline, members
        time.sleep(0.1)


def test_two_processes_restart_a_killed_one_and_stop_gracefully(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker
) -> None:
    group = start_worker(
        "--pool", "gevent", "-c", "50", "--processes", "2", "-n", "grp@%h", "--lost-timeout", "2", ready=False
    )
    group.wait_for("worker ready", count=2)
    members = _members(app, 2)
    assert {m["group"] for m in members} == {f"grp@{os.uname().nodename}"}
    assert len({m["pid"] for m in members}) == 2
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "greenq", "status", "--json"],
            cwd=ROOT,
            env={**os.environ, "GREENQ_BROKER_URL": redis_url},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert sorted(w["member"] for w in status["workers"]) == ["1/2", "2/2"]
    results = basic.count_run_late.map([("grp", 0.5)] * 400)  # late ack: nothing may be lost
    results[0].get(timeout=30)
    victim = members[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    group.wait_for("exited with -9; restarting it")
    group.wait_for("worker ready", count=3)
    for result in results:
        result.get(timeout=60)
    done = {k.decode(): int(v) for k, v in r.hgetall("done:grp").items()}
    assert len(done) == 400, "every task completed"
    assert r.xlen("greenq:{q:default}:stream") == 0
    group.signal(signal.SIGTERM)
    assert group.wait(60) == 0
    assert group.output.count("stopped:") >= 2
    assert not any(p.pid == victim for p in psutil.process_iter())


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, True), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM-to-group", "SIGTERM-to-supervisor", "SIGINT-to-group"],
)
def test_one_signal_however_delivered_is_one_graceful_stop(
    app: GreenQ, r: redis.Redis, redis_url: str, signum: int, to_group: bool
) -> None:
    """A signal to the supervisor's process group (Ctrl-C, ``kill -TERM -PGID``) reaches each
    worker once, through the supervisor: running early-ack tasks finish, nothing is lost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"GREENQ_BROKER_URL": redis_url, "GREENQ_WORKER_CPU_WORKERS": "0", "PYTHONUNBUFFERED": "1"}
    args = ["-m", "greenq", "worker", "-A", "tests.apps.basic", "-c", "5", "--processes", "2", "-l", "INFO"]
    group = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _members(app, 2)
        results = [basic.count_sleep.delay("grp-signal", 1.0) for _ in range(4)]
        deadline = time.monotonic() + 30
        while r.llen("started:grp-signal") < 4:
            assert time.monotonic() < deadline, "tasks did not start"
            time.sleep(0.05)
        if to_group:
            os.killpg(group.pid, signum)
        else:
            group.send_signal(signum)
        output, _ = group.communicate(timeout=60)
    finally:
        if group.poll() is None:
            os.killpg(group.pid, signal.SIGKILL)
    assert group.returncode == 0, output
    assert "second" not in output and "exiting now" not in output
    assert output.count("graceful shutdown") == 2  # one per worker process
    assert [result.get(timeout=5) for result in results] == [result.id for result in results]
