"""The app the security tests run as producer and worker: every setting (broker, TLS, key_prefix)
comes from the environment, so one module serves each tenant and each connection kind."""

from __future__ import annotations

from typing import Any

from greenq import GreenQ

app = GreenQ("secapp")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(acks_late=True)
def add_late(a: int, b: int) -> int:
    return a + b


@app.task(bind=True, max_retries=3)
def retry_once(self: Any, value: str) -> str:
    """Fails once, then succeeds: the retry waits in the delayed set and is moved by the worker."""
    if self.request.retries == 0:
        raise self.retry(countdown=0.05)
    return value


@app.task
def fail(text: str) -> None:
    raise ValueError(text)


@app.task
def count(key: str) -> int:
    """``app.redis``: the task bodies' own client (and, under gevent, its multiplexer)."""
    return int(app.redis.incr(key))


@app.task
def tenant() -> str:
    """Which app ran this task: its key prefix."""
    return str(app.conf.key_prefix)
