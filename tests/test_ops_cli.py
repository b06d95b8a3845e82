"""The operator commands, run as real CLI processes against real workers and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from greenq import GreenQ, admin
from greenq.broker.redis import Keys
from tests.apps import basic

ROOT = Path(__file__).resolve().parent.parent


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    full.update({"GREENQ_BROKER_URL": url, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_status_json_and_table_show_queues_and_workers(app: GreenQ, redis_url: str, start_worker) -> None:
    worker = start_worker("-c", "7", "-n", "probe@%h", "--lost-timeout", "1")
    running = basic.count_sleep.delay("st", 30.0)
    basic.sleepy.apply_async((1,), countdown=300)
    basic.add.apply_async((1, 2), queue="idle")
    app.send_task("no.such.task")
    worker.wait_for("dead-lettering")
    deadline = time.monotonic() + 10
    # No event says "the heartbeat now shows the running task": it is refreshed every 0.25 s.
    while not any(w["running"] for w in admin.workers(app.broker)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    data = json.loads(cli(redis_url, "status", "--json").stdout)
    queues = {q["name"]: q for q in data["queues"]}
    assert (queues["default"]["delayed"], queues["default"]["dead"]) == (1, 1), queues
    assert queues["idle"]["ready"] == 1 and queues["idle"]["oldest_age_s"] >= 0
    [probe] = data["workers"]
    assert probe["name"].startswith("probe@") and probe["pid"] == worker.pid and probe["concurrency"] == 7
    table = cli(redis_url, "status").stdout
    assert "QUEUES" in table and "WORKERS" in table and "probe@" in table
    active = json.loads(cli(redis_url, "inspect", "active", "-d", probe["name"]).stdout)
    assert [a["id"] for a in active[probe["consumer"]]] == [running.id]
    assert active[probe["consumer"]][0]["runtime_s"] >= 0
    registered = json.loads(cli(redis_url, "inspect", "registered").stdout)
    assert "tests.apps.basic.add" in registered[probe["consumer"]]
    pong = cli(redis_url, "ping")
    assert pong.returncode == 0 and "pong (heartbeat" in pong.stdout
    unknown = cli(redis_url, "inspect", "active", "-d", "ghost")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "greenq: error: no live worker named 'ghost'"


def test_purge_asks_unless_yes_and_reports_the_count(app: GreenQ, r: redis.Redis, redis_url: str) -> None:
    basic.add.map([(1, 1)] * 2500, queue="bulk")
    refused = cli(redis_url, "purge", "bulk")
    assert refused.returncode == 1 and "refusing to purge without --yes" in refused.stderr
    done = cli(redis_url, "purge", "bulk", "--yes")
    assert done.returncode == 0 and "purged 2,500 messages from bulk" in done.stdout
    assert r.xlen(Keys.stream("bulk")) == 0
    missing = cli(redis_url, "purge", "nope", "--yes")
    assert missing.returncode == 1 and "unknown queue 'nope'" in missing.stderr


def test_peek_shows_the_next_messages_without_consuming(app: GreenQ, r: redis.Redis, redis_url: str) -> None:
    first = basic.add.apply_async((1, 2), queue="look")
    basic.add.apply_async((3, 4), queue="look", priority=9)
    shown = json.loads(cli(redis_url, "peek", "look", "-n", "5").stdout)
    assert [m["args"] for m in shown] == [[3, 4], [1, 2]]
    assert shown[1]["id"] == first.id
    assert r.xlen(Keys.stream("look")) == 1


def test_dead_letters_list_requeue_and_purge(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker
) -> None:
    worker = start_worker("-c", "2")
    app.send_task("gone.task", [1])
    app.send_task("gone.task", [2])
    worker.wait_for("dead-lettering", count=2)
    worker.stop()
    listed = json.loads(cli(redis_url, "dead", "list", "default").stdout)
    assert [d["args"] for d in listed] == [[1], [2]]
    assert listed[0]["reason"] == "unknown task 'gone.task'"
    shown = json.loads(cli(redis_url, "dead", "show", listed[0]["entry"]).stdout)
    assert shown[0]["args"] == [1]
    requeued = cli(redis_url, "dead", "requeue", listed[0]["entry"])
    assert "requeued 1 dead letters" in requeued.stdout
    assert r.xlen(Keys.stream("default")) == 1 and r.xlen(Keys.dead("default")) == 1
    purged = cli(redis_url, "dead", "purge")
    assert "purged 1 dead letters" in purged.stdout and r.xlen(Keys.dead("default")) == 0


def test_forged_dead_letter_is_not_requeued_until_resigned(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker
) -> None:
    signed = {"GREENQ_MESSAGE_SIGNING_KEY": "k1"}
    worker = start_worker("-c", "2", env=signed)
    app.send_task("tests.apps.basic.add", [1, 1])  # unsigned: dead-lettered
    worker.wait_for("dead-lettering")
    refused = cli(redis_url, "dead", "requeue", "default", env=signed)
    assert refused.returncode == 1 and "signature missing or invalid; not requeued" in refused.stderr
    assert r.xlen(Keys.dead("default")) == 1
    resent = cli(redis_url, "send", "tests.apps.basic.add", "[1, 1]", "--wait", "20", env=signed)
    assert resent.stdout.split()[1] == "2"
