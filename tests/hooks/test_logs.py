"""``--log-format json``: every line the worker writes is one JSON object, and records emitted
inside a task — by the user's own logger too, in a hybrid child as well — carry its id and
name. Also ``shared_task(bind=True)`` as Celery's tutorials use it (``self.request.retries``)."""

from __future__ import annotations

import json
import signal

import redis

from greenq import GreenQ

NOTIFY = "tests.hooks.log_app.notify"
CRUNCH = "tests.hooks.log_app.crunch"


def test_json_logs_parse_line_by_line_and_carry_task_ids(
    redis_url: str, r: redis.Redis, start_worker
) -> None:
    worker = start_worker(
        "-P", "gevent", "-c", "5", "--cpu-workers", "1", "--log-format", "json", app="tests.hooks.log_app"
    )
    app = GreenQ("probe", broker=redis_url)
    notify, crunch = app.send_task(NOTIFY, [7]), app.send_task(CRUNCH, [21])
    assert notify.get(timeout=30) == {"user": 7, "retries": 1}  # shared_task, bind=True, one retry
    doubled, child_pid = crunch.get(timeout=30)
    assert doubled == 42 and child_pid != worker.pid
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    records = [json.loads(line) for line in worker.output.splitlines() if line.strip()]
    assert len(records) > 5
    for record in records:
        assert set(record) >= {"time", "level", "logger", "worker", "pid", "task_name", "task_id", "message"}
        assert record["time"].endswith("+00:00") and record["worker"].startswith("worker@")
    tries = [
        rec for rec in records if rec["logger"] == "shop.tasks" and rec["message"].startswith("notifying")
    ]
    assert [rec["message"] for rec in tries] == ["notifying 7 (try 0)", "notifying 7 (try 1)"]
    assert {(rec["task_id"], rec["task_name"], rec["pid"]) for rec in tries} == {
        (notify.id, NOTIFY, worker.pid)
    }
    (crunching,) = [rec for rec in records if rec["message"] == "crunching 21"]
    assert crunching["task_id"] == crunch.id and crunching["task_name"] == CRUNCH
    assert crunching["pid"] == child_pid and crunching["level"] == "WARNING"
    ready = next(rec for rec in records if rec["message"].startswith("worker ready"))
    assert ready["task_id"] is None and ready["logger"] == "greenq.worker"
