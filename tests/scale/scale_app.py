"""Tasks for the scale tests: each counts its runs in COUNTER_URL, a plain Redis outside the
broker under test, so a failover or a resharding cannot lose the evidence."""

from __future__ import annotations

import os
import time

import redis

from greenq import GreenQ

app = GreenQ("scale")
_counter: list[redis.Redis] = []


def counter() -> redis.Redis:
    if not _counter:
        _counter.append(redis.Redis.from_url(os.environ["COUNTER_URL"], max_connections=600))
    return _counter[0]


@app.task(acks_late=True)
def late(tag: str, sleep_s: float = 0.0) -> str:
    """Late ack: counts runs per task id, and how many finished."""
    task_id = late.request.id
    counter().hincrby(f"runs:{tag}", task_id, 1)
    time.sleep(sleep_s)
    counter().hincrby(f"done:{tag}", task_id, 1)
    return task_id


@app.task
def early(tag: str) -> str:
    counter().hincrby(f"runs:{tag}", early.request.id, 1)
    return early.request.id


@app.task
def touch(key: str) -> int:
    """A task that uses ``app.redis`` (the broker's server): it must follow the broker's master."""
    return int(app.redis.incr(key))


@app.task(bind=True)
def where(self, tag: str, fail_first: bool = False) -> str:
    """Records the order of runs and the shard each ran from (``request.queue``); with
    ``fail_first`` it retries once, to show a retry stays in its shard."""
    queue = self.request.queue or ""
    counter().rpush(f"order:{tag}", queue)
    if fail_first and self.request.retries == 0:
        raise self.retry(countdown=0.05)
    return queue


@app.task
def stamp(tag: str) -> float:
    """Records when it ran (ETA tests)."""
    ran = time.time()
    counter().hset(f"ran:{tag}", stamp.request.id, repr(ran))
    return ran


@app.task
def collect(values: list[object]) -> int:
    """A chord body: how many member results it got."""
    return len(values)


# Bodies that do nothing, for scripts/scale_bench.py: what is left is the queue's own cost.
@app.task(ignore_result=True)
def bare(payload: str = "") -> None:
    """Early ack, no result."""


@app.task
def bare_result(payload: str = "") -> int:
    """Early ack, a result."""
    return 1


@app.task(acks_late=True)
def bare_late(payload: str = "") -> int:
    """Late ack, a result."""
    return 1
