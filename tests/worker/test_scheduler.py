"""Periodic schedules fired by real workers on a real Redis: each fire time enqueues exactly one
message however many workers run the scheduler, a dead worker does not stop a schedule, the
catch-up policies after an outage, ``greenq beat`` and ``greenq schedule list|run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from greenq.broker.keys import Keys

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.apps.sched_app"


def _fires(r: redis.Redis) -> list[int]:
    """The fire times (epoch ms) of the runs so far, in run order."""
    return [int(task_id.decode().rpartition("@")[2]) for task_id in r.lrange("ticks:t", 0, -1)]


def _wait_fires(r: redis.Redis, count: int, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(fires := _fires(r)) < count:
        assert time.monotonic() < deadline, f"only {len(fires)} of {count} fires"
        time.sleep(0.05)
    return fires


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")} | {"GREENQ_BROKER_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_three_workers_enqueue_each_fire_time_once(r: redis.Redis, start_worker) -> None:
    workers = [start_worker("-c", "5", "-n", f"s{i}@%h", app=APP) for i in range(3)]
    fires = _wait_fires(r, 6)
    ordered = sorted(set(fires))
    assert len(fires) == len(ordered), f"a fire time ran twice: {fires}"
    assert all(f % 1000 == 0 for f in ordered)  # interval fires are aligned to the epoch
    assert ordered == list(range(ordered[0], ordered[-1] + 1000, 1000)), "a fire time was skipped"
    state = r.hgetall(Keys.schedule("default", "tick-every"))
    assert int(state[b"last"]) >= ordered[-1] and state[b"task_id"].startswith(b"tick-every@")
    # Kill the worker that fired last: the others go on, still once per fire time.
    fired_by = state[b"worker"].decode()
    victim = next(w for w in workers if f":{w.pid}:" in fired_by)
    victim.signal(signal.SIGKILL)
    before = len(fires)
    fires = _wait_fires(r, before + 3)
    assert len(fires) == len(set(fires)), f"a fire time ran twice: {fires}"
    later = sorted(set(fires))
    assert later == list(range(later[0], later[-1] + 1000, 1000))


@pytest.mark.parametrize("policy", ["latest", "all", "skip"])
def test_catch_up_after_every_scheduler_was_down(r: redis.Redis, start_worker, policy: str) -> None:
    env = {"SCHED_CATCH_UP": policy}
    first = start_worker("-c", "5", app=APP, env=env)
    _wait_fires(r, 1)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    stopped_at = max(_fires(r))
    time.sleep(4.5)  # the outage itself: four or five fire times pass with nobody to fire them
    seconds, micros = r.time()
    restart_ms = seconds * 1000 + micros // 1000
    start_worker("-c", "5", app=APP, env=env)
    _wait_fires(r, len(_fires(r)) + 2)  # running again on the regular cadence
    missed = list(range(stopped_at + 1000, restart_ms + 1, 1000))  # nobody was up to fire these
    assert len(missed) >= 3
    if policy == "all":  # its catch-up fires run at once (-c 5) and finish in any order
        deadline = time.monotonic() + 30
        while not set(missed) <= set(_fires(r)) and time.monotonic() < deadline:
            time.sleep(0.05)
    fires = _fires(r)
    assert len(fires) == len(set(fires)), f"a fire time ran twice: {fires}"
    ran = [f for f in missed if f in fires]
    if policy == "all":
        assert ran == missed
    elif policy == "latest":
        assert len(ran) <= 1 and (not ran or ran[0] == max(missed)), (missed, fires)
    else:
        assert [f for f in ran if f <= restart_ms - 1000] == [], (missed, fires)


def test_beat_fires_alone_and_schedule_list_and_run_show_and_fire(
    r: redis.Redis, redis_url: str, start_worker
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    beat = subprocess.Popen(
        [sys.executable, "-m", "greenq", "beat", "-A", APP],
        env=env | {"GREENQ_BROKER_URL": redis_url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        start_worker("-c", "5", "--no-schedule", app=APP)
        fires = _wait_fires(r, 2)
        state = r.hgetall(Keys.schedule("default", "tick-every"))
        assert state[b"worker"].startswith(b"beat@")  # the worker ran them; beat fired them
    finally:
        beat.send_signal(signal.SIGTERM)
        out, _ = beat.communicate(timeout=30)
    assert beat.returncode == 0, out
    listed = _cli(redis_url, "schedule", "list", "-A", APP, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["task"], row["schedule"]) == (
        "tick-every",
        "tests.apps.sched_app.tick",
        "every 1 s",
    )
    assert row["last_task_id"].startswith("tick-every@") and row["fired_by"].startswith("beat@")
    assert int(row["last_task_id"].rpartition("@")[2]) >= max(fires)
    ran = _cli(redis_url, "schedule", "run", "tick-every", "-A", APP)
    assert ran.returncode == 0, ran.stderr
    task_id = ran.stdout.strip()
    deadline = time.monotonic() + 20
    while task_id.encode() not in r.lrange("ticks:t", 0, -1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    unknown = _cli(redis_url, "schedule", "run", "nope", "-A", APP)
    assert unknown.returncode == 1 and "unknown schedule 'nope'" in unknown.stderr
    status = _cli(redis_url, "status", "-A", APP)
    assert status.returncode == 0, status.stderr
    assert "SCHEDULES 1; next: tick-every (tests.apps.sched_app.tick, every 1 s) at " in status.stdout
    assert (
        json.loads(_cli(redis_url, "status", "-A", APP, "--json").stdout)["schedules"][0]["name"]
        == "tick-every"
    )


def test_a_worker_with_a_bad_schedule_refuses_to_start_naming_it(start_worker) -> None:
    worker = start_worker("-c", "5", app=APP, ready=False, env={"SCHED_TASK": "tests.apps.sched_app.tik"})
    assert worker.wait(30) == 1
    assert "schedule 'tick-every': unknown task 'tests.apps.sched_app.tik'" in worker.output
    assert "did you mean 'tests.apps.sched_app.tick'" in worker.output
    assert "Traceback" not in worker.output and "worker ready" not in worker.output
