"""Runtime control: pausing and resuming a queue from the command line, and ending a running
greenlet with revoke(terminate=True)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import orjson
import redis

from tests.conftest import ROOT
from tests.flow.conftest import wait_until

FLOW_APP = "tests.flow.flow_app"


def greenq_cli(url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env["GREENQ_BROKER_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "greenq", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_pause_stops_reserving_lets_running_tasks_finish_and_resume_picks_up(
    start_worker: Any, flow: Any, r: redis.Redis, redis_url: str
) -> None:
    worker = start_worker("-c", "5", "-Q", "paused,other", app=FLOW_APP)
    running = flow.hold.delay("h")
    wait_until(lambda: r.exists("h:running"), what="the long task to start")
    assert "workers stop reserving" in greenq_cli(redis_url, "queue", "pause", "paused")
    worker.wait_for("queue paused paused")
    waiting = flow.mark.map([("m",)] * 10)
    for result in flow.other.map([("o",)] * 10):  # the worker's other queue keeps flowing
        result.get(timeout=20)
    r.set("h", 1)
    assert running.get(timeout=20) == "held"  # what was already running finishes
    assert not r.exists("m")
    groups = r.xinfo_groups("greenq:{q:paused}:stream")
    assert [g["pending"] for g in groups] == [0] and r.xlen("greenq:{q:paused}:stream") == 10
    status = json.loads(greenq_cli(redis_url, "status", "--json"))
    assert {q["name"]: q["paused"] for q in status["queues"]} == {"paused": True, "other": False}
    assert "paused" in greenq_cli(redis_url, "status")
    events = [orjson.loads(fields[b"e"]) for _, fields in r.xrange("greenq:events")]
    assert [e["event"] for e in events if e.get("queue") == "paused"] == ["queue-pause"]
    greenq_cli(redis_url, "queue", "resume", "paused")
    for result in waiting:
        result.get(timeout=20)
    assert int(r.get("m") or 0) == 10


def test_a_queue_rate_changed_at_run_time_reaches_the_workers(
    start_worker: Any, flow: Any, r: redis.Redis, redis_url: str
) -> None:
    worker = start_worker("-c", "5", "-Q", "paused", app=FLOW_APP)
    assert "2/s" in greenq_cli(redis_url, "queue", "limit", "paused", "2/s")
    worker.wait_for("queue paused rate limit now 2/s")
    results = flow.mark.map([("m",)] * 6)
    results[0].get(timeout=20)
    assert r.zcard("greenq:{q:paused}:delayed") >= 4  # the rest wait for their slots, outside the stream
    assert "2/s" in json.dumps(json.loads(greenq_cli(redis_url, "status", "--json"))["queues"])
    greenq_cli(redis_url, "queue", "limit", "paused", "0")
    worker.wait_for("queue paused rate limit now none")
    for result in results:
        result.get(timeout=20)


def test_revoke_terminate_ends_a_running_greenlet(start_worker: Any, flow: Any, r: redis.Redis) -> None:
    worker = start_worker("-c", "1", "-Q", "stop,other", app=FLOW_APP)
    doomed = flow.endless.delay("e")
    wait_until(lambda: r.exists("e:running"), what="the endless task to start")
    flow.app.control.revoke(doomed.id, terminate=True)
    assert doomed.state != "REVOKED"
    wait_until(lambda: doomed.state == "REVOKED", what="REVOKED")
    assert r.exists("e:finally")  # its finally: block ran
    assert flow.other.delay("x").get(timeout=20) == 1  # its only slot is free again
    worker.wait_for("terminating task")
