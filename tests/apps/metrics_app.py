"""Tasks for the flow-control metrics test (tests/test_observability.py): a task with a
concurrency limit of one that runs until the test lets it end, so its lease (and the message
parked behind it) can be seen on /metrics. The broker comes from GREENQ_BROKER_URL.
"""

from __future__ import annotations

import time

import redis

from greenq import GreenQ

app = GreenQ("metrics")
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(app.conf.broker_url))
    return _client[0]


def clear() -> None:
    """Forget the cached client and settings (a test points the app at its own Redis)."""
    for made in _client:
        made.close()
    _client.clear()
    app.close()
    app._settings = None


@app.task(queue="leased", concurrency_limit=1)
def hold(key: str) -> str:
    """Runs until ``key`` is set (30 s at most), holding the task's only lease."""
    client().incr(f"{key}:running")
    deadline = time.monotonic() + 30
    while not client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "held"
