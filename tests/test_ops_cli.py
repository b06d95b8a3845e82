"""The operator commands, run as real CLI processes against real workers and Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from greenq import GreenQ, admin
from greenq.broker.keys import Keys
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
    assert data["broker"] == redis_url
    table = cli(redis_url, "status").stdout
    assert table.startswith(f"BROKER {redis_url} (environment)\n")
    assert "QUEUES" in table and "WORKERS" in table and "probe@" in table
    active = json.loads(cli(redis_url, "inspect", "active", "-d", probe["name"], "--json").stdout)
    [entry] = active[probe["consumer"]]["active"]
    assert entry["id"] == running.id and entry["runtime_s"] >= 0 and "args" not in entry
    assert 0 <= active[probe["consumer"]]["heartbeat_age_s"] < 5
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


# ---- issue 26: consumers from heartbeats, queue forget, inspect table, events, revoke ----------


def _wait_until(condition, timeout: float = 10.0) -> None:
    """Poll a condition with a deadline (heartbeats are refreshed every lost_timeout / 4)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_consumers_counts_live_workers_reading_an_empty_queue(
    app: GreenQ, redis_url: str, start_worker
) -> None:
    start_worker("-c", "2", "-Q", "quiet,other", "--lost-timeout", "1")
    start_worker("-c", "2", "-Q", "quiet", "--lost-timeout", "1")
    basic.add.apply_async((1, 1), queue="unread")
    queues = {q["name"]: q for q in json.loads(cli(redis_url, "status", "--json").stdout)["queues"]}
    assert queues["quiet"]["ready"] == 0 and queues["quiet"]["consumers"] == 2
    assert queues["other"]["consumers"] == 1 and queues["unread"]["consumers"] == 0
    assert admin.queue_stats(app.broker, "quiet").consumers == 2  # the exporter reads the same


def test_queue_forget_refuses_while_messages_or_consumers_remain(
    app: GreenQ, r: redis.Redis, redis_url: str, start_worker
) -> None:
    basic.add.apply_async((1, 1), queue="old")
    basic.add.apply_async((1, 1), queue="old", countdown=600)
    held = cli(redis_url, "queue", "forget", "old")
    assert held.returncode == 1
    assert "queue 'old' still holds messages (ready 1, in flight 0, delayed 1, dead 0)" in held.stderr
    cli(redis_url, "purge", "old", "--yes")
    r.delete(Keys.delayed("old"))
    worker = start_worker("-c", "1", "-Q", "old", "-n", "reader@%h")
    read = cli(redis_url, "queue", "forget", "old")
    assert read.returncode == 1 and "is read by 1 live worker(s): reader@" in read.stderr
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    done = cli(redis_url, "queue", "forget", "old")
    assert done.returncode == 0 and done.stdout == "forgot queue old\n"
    assert "old" not in [q["name"] for q in json.loads(cli(redis_url, "status", "--json").stdout)["queues"]]
    assert r.keys("greenq:{q:old}*") == []
    assert cli(redis_url, "queue", "forget", "old").stderr.startswith("greenq: error: unknown queue 'old'")


def test_inspect_active_table_says_how_old_the_heartbeat_is(
    app: GreenQ, redis_url: str, start_worker
) -> None:
    start_worker("-c", "3", "--lost-timeout", "2")
    running = basic.count_sleep.delay("table", 30.0)
    _wait_until(lambda: any(w["running"] for w in admin.workers(app.broker)))
    out = cli(redis_url, "inspect", "active").stdout
    heading, header, row = out.splitlines()
    assert re.fullmatch(r"worker@\S+  \(heartbeat \d+\.\ds ago, 1 running\)", heading), heading
    assert header.split() == ["id", "task", "runtime"]
    assert row.split()[:2] == [running.id, "tests.apps.basic.count_sleep"]
    assert "table" not in out  # arguments are user data: shown only when asked for
    with_args = json.loads(cli(redis_url, "inspect", "active", "--args", running.id, "--json").stdout)
    [entry] = next(iter(with_args.values()))["active"]
    assert json.loads(entry["arguments"]) == {"args": ["table", 30.0], "kwargs": {}}
    assert app.broker.client.keys("greenq:ask:*") == []  # the question is withdrawn once answered


def test_events_says_when_no_worker_sends_them_and_worker_E_turns_them_on(
    app: GreenQ, redis_url: str, start_worker
) -> None:
    quiet = start_worker("-c", "2")
    full = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    tail = subprocess.Popen(
        [sys.executable, "-m", "greenq", "events"],
        env={**full, "GREENQ_BROKER_URL": redis_url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        note = tail.stderr.readline()
    finally:
        tail.kill()  # it waits for events for ever, as it should
        tail.wait(10)
    assert "1 live worker(s) send no task events (worker@" in note and "greenq worker -E" in note
    assert "GREENQ_WORKER_SEND_TASK_EVENTS=1" in note
    quiet.signal(signal.SIGTERM)
    assert quiet.wait() == 0
    start_worker("-c", "2", "-E")
    assert basic.add.delay(2, 2).get(timeout=20) == 4
    shown = cli(redis_url, "events", "--from-start", "--count", "3")
    assert shown.returncode == 0 and shown.stderr == ""
    assert {line.split()[1] for line in shown.stdout.splitlines()} == {"received", "started", "succeeded"}


def test_revoke_says_what_will_happen(app: GreenQ, redis_url: str, start_worker) -> None:
    start_worker("-c", "2", "--lost-timeout", "2")
    unknown = cli(redis_url, "revoke", "no-such-id")
    assert unknown.returncode == 0
    assert unknown.stdout.startswith(
        "no-such-id: unknown so far: no result and not running on any live worker"
    )
    done = basic.add.delay(1, 2)
    assert done.get(timeout=20) == 3
    assert (
        cli(redis_url, "revoke", done.id).stdout
        == f"{done.id}: already SUCCESS; revoking it changed nothing\n"
    )
    running = basic.count_sleep.delay("rv", 2.0)
    _wait_until(lambda: any(a["id"] == running.id for w in admin.workers(app.broker) for a in w["active"]))
    late = cli(redis_url, "revoke", running.id).stdout
    assert late.startswith(f"{running.id}: already running on worker@") and "so it will finish" in late
    assert running.get(timeout=20) == running.id  # a started task is not stopped by revoke
