"""``after_task_publish`` for every message written as a new task, sent by the process that wrote
it: the producer for a group's members and a canvas's first messages, the worker for a chain's
next step, a link callback, a retry, a chord's body and a schedule's fire
(tests/apps/publish_app.py records each send and its pid).
Never for a unique message that was not written (another task holds its key), and no
``before_task_publish`` for the message a scheduler builds only to learn a schedule's queue.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import redis

from greenq import GreenQ
from tests.hooks.producer import run_producer

APP = "tests.apps.publish_app"


def produce(redis_url: str) -> dict[str, Any]:
    """Run ``publish_app.produce`` in another process: the producer's receivers live there."""
    code = "import json; from tests.apps import publish_app; print(json.dumps(publish_app.produce()))"
    found: dict[str, Any] = json.loads(run_producer(redis_url, code)[-1])
    return found


def entries(r: redis.Redis, signal: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(f"pub:{signal}", 0, -1)]


def sent(r: redis.Redis, signal: str) -> dict[tuple[str, int], int]:
    """(task id, retries) -> the pid that sent ``signal`` for it; each pair at most once."""
    found = entries(r, signal)
    twice = [k for k, n in Counter((e["id"], e["retries"]) for e in found).items() if n > 1]
    assert not twice, f"{signal} sent more than once for {twice}"
    return {(e["id"], e["retries"]): e["pid"] for e in found}


def test_after_task_publish_is_sent_where_each_new_task_is_written(
    redis_url: str, r: redis.Redis, start_worker: Any
) -> None:
    worker = start_worker("-P", "gevent", "-c", "8", app=APP)
    ids = produce(redis_url)
    app = GreenQ("probe", broker=redis_url)

    def get(task_id: str) -> Any:
        return app.AsyncResult(task_id).get(timeout=60)

    assert [get(i) for i in ids["group"]] == [2, 4]
    assert get(ids["chain"][1]) == 13
    assert get(ids["chord_body"]) == 14
    assert get(ids["callback"]) == 110
    assert get(ids["flaky"]) == 1
    assert get(ids["after_once"]) == 0
    # Each of those results is written by the flusher in a round after the one that wrote the
    # message and then sent its signal: every send is recorded by now.
    after = sent(r, "after_task_publish")
    producer, worker_pid = ids["pid"], worker.pid
    for task_id in [*ids["group"], *ids["chord_header"], ids["chain"][0], ids["linked"]]:
        assert after.get((task_id, 0)) == producer, task_id  # group members, canvas first messages
    assert after.get((ids["flaky"], 0)) == producer  # a plain delay() (as before)
    assert after.get((ids["chain"][1], 0)) == worker_pid  # the chain's next step
    assert after.get((ids["callback"], 0)) == worker_pid  # a link callback
    assert after.get((ids["flaky"], 1)) == worker_pid  # the retry
    assert after.get((ids["chord_body"], 0)) == worker_pid  # enqueued by the last member's round
    first, stood_for = ids["once"]
    assert stood_for == first  # the group's unique member is the task holding the key...
    once = [e for e in entries(r, "after_task_publish") if e["task"] == "tests.apps.publish_app.once"]
    assert [(e["id"], e["pid"]) for e in once] == [(first, producer)]  # ...and was not published
    # The worker's scheduler publishes its fires ("tick@<fire ms>") itself, each once; the
    # message it builds at start-up to learn the schedule's queue ("tick@0") is not announced.
    deadline = time.monotonic() + 30
    while not [e for e in entries(r, "after_task_publish") if e["id"].startswith("tick@")]:
        assert time.monotonic() < deadline, "no scheduled fire was published"
        time.sleep(0.05)
    fires = [e for e in entries(r, "after_task_publish") if e["id"].startswith("tick@")]
    assert {e["pid"] for e in fires} == {worker_pid}
    assert app.AsyncResult(fires[0]["id"]).get(timeout=30) == 21
    # before_task_publish goes where a message is built: a chain's next step in the worker too
    before = sent(r, "before_task_publish")
    assert ("tick@0", 0) not in before
    assert {(e["id"], 0) for e in fires} <= set(before)
    assert before.get((ids["chain"][1], 0)) == worker_pid
    assert before.get((ids["chain"][0], 0)) == producer
    assert before.get((ids["flaky"], 1)) == worker_pid  # a retry is published anew, as in Celery
    assert before.get((ids["chord_body"], 0)) == producer  # built, and kept in Redis, by the producer
