"""Tasks for the flow-control tests: each leaves evidence in Redis (start times by the server's
clock, counters) so that a test asserts what the workers did, never how long it took.

The broker comes from GREENQ_BROKER_URL; the HTTP target's port from FLOW_TARGET_PORT.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

import redis

from greenq import GreenQ, http

app = GreenQ("flow")
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(app.conf.broker_url))
    return _client[0]


def target(host: int, path: str) -> str:
    return f"http://127.0.0.{host}:{os.environ['FLOW_TARGET_PORT']}/{path}"


def _stamp(key: str) -> None:
    seconds, micros = client().time()
    client().rpush(key, seconds * 1000 + micros // 1000)


@app.task(queue="rated", rate_limit="30/s", ignore_result=True)
def rated(i: int) -> None:
    _stamp("rated:starts")


@app.task(queue="mixed", rate_limit="5/s")
def slow_lane(i: int) -> None:
    client().incr("slow_lane:done")


@app.task(queue="mixed")
def fast_lane(i: int) -> int:
    return int(client().incr("fast_lane:done"))


@app.task(queue="crawl", acks_late=True, concurrency_limit=2, limit_key=lambda url: urlsplit(url).hostname)
def fetch(url: str) -> int:
    return http.get(url, timeout=30).status_code


@app.task(queue="polite")
def polite(url: str) -> int:
    return http.get(url, timeout=30).status_code


@app.task(queue="polite")
def polite_retry(url: str) -> int:
    return http.get(url, timeout=30, retry_on_429=True).status_code


@app.task(queue="paused")
def hold(key: str) -> str:
    client().set(f"{key}:running", 1)
    deadline = time.monotonic() + 30
    while not client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "held"


@app.task(queue="paused")
def mark(key: str) -> int:
    return int(client().incr(key))


@app.task(queue="other")
def other(key: str) -> int:
    return int(client().incr(key))


@app.task(queue="stop")
def endless(key: str) -> Any:
    try:
        client().set(f"{key}:running", 1)
        while True:
            time.sleep(0.05)
    finally:
        client().set(f"{key}:finally", 1)


@app.task(queue="polite")
def bounded(url: str) -> str:
    """Sent with ``expires``: greenq.http's default timeout is the time left until then."""
    try:
        http.get(url)
    except http.Timeout:
        return "deadline"
    return "answered"


@app.task(queue="polite")
def bounded_redis() -> str:
    """Sent with ``expires``: a blocking app.redis call gives up when the time is over."""
    try:
        app.redis.blpop(["never"], 0)
    except redis.TimeoutError:
        return "deadline"
    return "answered"
