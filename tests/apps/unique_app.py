"""Tasks for the unique-enqueue tests (tests/worker/test_unique.py). The broker comes from
GREENQ_BROKER_URL. With UNIQUE_SCHEDULE=1 the app also has an every-second ``overlap=False``
schedule whose task runs longer than its interval."""

from __future__ import annotations

import os
import time

import redis

from greenq import GreenQ

app = GreenQ(
    "unique",
    beat_schedule={
        "slow-tick": {
            "task": "tests.apps.unique_app.slow_tick",
            "schedule": 1.0,
            "overlap": False,
        }
    }
    if os.environ.get("UNIQUE_SCHEDULE")
    else {},
)
_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url or "")
    return _client


@app.task(bind=True)
def hold(self, tag: str) -> str:
    """Records its start, then runs until the test sets ``gate:<tag>`` (at most 30 s)."""
    client().rpush(f"started:{tag}", str(self.request.id))
    deadline = time.monotonic() + 30
    while not client().exists(f"gate:{tag}") and time.monotonic() < deadline:
        time.sleep(0.02)
    return tag


@app.task(unique_for=2)
def by_args(x: int) -> int:
    return x


@app.task(unique_for=60)
def by_args_long(x: int) -> int:
    return x


@app.task(bind=True)
def flaky(self, tag: str) -> str:
    """Asks for one retry (in 1.5 s), then succeeds."""
    client().rpush(f"attempts:{tag}", str(self.request.retries))
    if self.request.retries == 0:
        raise self.retry(countdown=1.5)
    return tag


@app.task
def slow_tick() -> None:
    """The overlap=False schedule's task: runs 2.5 s, longer than its 1-s interval."""
    client().rpush("tick-start", time.time())
    time.sleep(2.5)
    client().rpush("tick-end", time.time())
