"""``greenq worker --processes N``: a supervisor over N patched worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    import time

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
