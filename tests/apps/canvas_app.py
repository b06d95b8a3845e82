"""Tasks for the workflow tests (chain, group, chord, callbacks, progress). The broker comes from
GREENQ_BROKER_URL; runs are counted in the broker's Redis so tests can assert exactly-once."""

from __future__ import annotations

import os
import time

import redis

from greenq import GreenQ

app = GreenQ("canvas-tests")
_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url, max_connections=200)
    return _client


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def mul(a: int, b: int) -> int:
    return a * b


@app.task
def noop() -> None:
    return None


@app.task
def ident(x: object) -> object:
    return x


@app.task
def xsum(values: list[int], extra: int = 0) -> int:
    client().incr("body-runs")
    client().rpush("body-args", len(values))
    return sum(values) + extra


@app.task(bind=True)
def tsum(self, values: list[int]) -> int:
    """A chord body that records each run under its own task id."""
    client().hincrby("tsum-runs", self.request.id, 1)
    return sum(values)


@app.task
def boom(x: object = None) -> None:
    raise ValueError(f"boom {x}")


@app.task(bind=True, max_retries=3, default_retry_delay=0.05)
def flaky(self, x: int, tag: str) -> int:
    """Fails on its first run (per tag and value), then succeeds: a member retried once."""
    if client().hincrby(f"flaky:{tag}", str(x), 1) == 1:
        raise self.retry(exc=RuntimeError("first try fails"))
    return x


@app.task(acks_late=True)
def slow_late(x: int, sleep_s: float) -> int:
    """A late-ack member that says it started (with its pid), then sleeps on its first run
    only: a test kills the worker running it, and the rerun finishes at once."""
    runs = client().hincrby("slow-runs", str(x), 1)
    client().rpush("slow-started", f"{x}:{os.getpid()}")
    if runs == 1:
        time.sleep(sleep_s)
    return x


@app.task
def on_error(task_id: str, error: dict) -> None:
    """An errback: records which task failed and how."""
    client().rpush("errbacks", f"{task_id}|{error.get('exc_type')}|{error.get('exc_message')}")


@app.task
def remember(value: object) -> None:
    """A link callback: records the parent's result."""
    client().rpush("linked", repr(value))


@app.task(bind=True)
def progress(self, steps: int, gate: str) -> int:
    """Reports PROGRESS steps; waits for the test to open ``gate`` first, so a reader can start
    before any update is written (an event, not a sleep)."""
    client().blpop(gate, timeout=30)
    for done in range(1, steps + 1):
        self.update_state(state="PROGRESS", meta={"done": done, "total": steps})
    return steps


@app.task(bind=True)
def request_header(self, _parent: object = None) -> object:
    """The run's ``request_id`` header (set by a ``before_task_publish`` receiver upstream)."""
    return getattr(self.request, "request_id", None)
