"""An app whose ``before_task_publish``/``after_task_publish`` receivers record, in Redis, each
message they were sent for and the pid that sent them: which process published what
(tests/hooks/test_publish.py). ``produce`` sends a group, a chain, a chord, a task with a link
callback, a task that retries once, a unique duplicate, and a group whose unique member another
task stands for.

Imported only by worker processes and the producer subprocess, never by the pytest process:
signals are module-level, so a receiver connected there would stay connected for other tests.
The broker and the evidence Redis come from GREENQ_BROKER_URL.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from greenq import GreenQ, chain, chord, group, signals
from greenq.message import new_id

app = GreenQ(  # a schedule too: what the worker's scheduler fires is published by the worker
    "publish",
    beat_schedule={"tick": {"task": "tests.apps.publish_app.add", "schedule": 0.5, "args": [20, 1]}},
)
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["GREENQ_BROKER_URL"]))
    return _client[0]


def on_publish(sender: Any, headers: dict[str, Any], routing_key: str, **kw: Any) -> None:
    entry = {"task": sender, "id": headers["id"], "retries": headers["retries"], "pid": os.getpid()}
    client().rpush(f"pub:{kw['signal'].name}", json.dumps(entry))


signals.before_task_publish.connect(on_publish)
signals.after_task_publish.connect(on_publish)


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task(unique_for=60, queue="held")  # no worker takes it: its unique key stays held for the test
def once(x: int) -> int:
    return x


@app.task(bind=True)
def flaky(self: Any) -> int:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return int(self.request.retries)


def produce() -> dict[str, Any]:
    """Send every shape once; the ids by role (run in a subprocess: the producer)."""
    members = group(add.s(1, 1), add.s(2, 2))()
    steps = chain(add.s(1, 2), add.s(10))()
    joined = chord([add.s(3, 3), add.s(4, 4)], total.s())()
    callback = new_id()
    linked = add.apply_async((5, 5), link=add.s(100).set(task_id=callback))
    retried = flaky.delay()
    unique = once.delay(7)
    assert once.delay(7).id == unique.id  # a plain unique duplicate: not written, not published
    again = group(once.s(7), add.s(0, 0))()  # once(7) is not written again: unique holds its key
    return {
        "group": [r.id for r in members.results],
        "chain": [steps.parent.id, steps.id],
        "chord_header": [r.id for r in joined.parent.results],
        "chord_body": joined.id,
        "linked": linked.id,
        "callback": callback,
        "flaky": retried.id,
        "once": [unique.id, again.results[0].id],
        "after_once": again.results[1].id,
        "pid": os.getpid(),
    }
