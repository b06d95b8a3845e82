"""Tasks used by the worker tests. The broker comes from GREENQ_BROKER_URL (set by the fixtures)."""

from __future__ import annotations

import os
import socket
import sys
import time

import redis

from greenq import GreenQ

app = GreenQ("tests")
_client: redis.Redis | None = None


def client() -> redis.Redis:
    """One shared client per process, sized for a -c 500 worker."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url, max_connections=600)
    return _client


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def count_run(tag: str) -> str:
    """Counts runs per task id, so tests can assert exactly-once."""
    client().hincrby(f"runs:{tag}", count_run.request.id, 1)
    return count_run.request.id


@app.task(acks_late=True)
def count_run_late(tag: str, sleep_s: float = 0.0) -> str:
    client().hincrby(f"runs:{tag}", count_run_late.request.id, 1)
    client().rpush(f"started:{tag}", count_run_late.request.id)
    time.sleep(sleep_s)
    client().hincrby(f"done:{tag}", count_run_late.request.id, 1)
    return count_run_late.request.id


@app.task
def count_sleep(tag: str, sleep_s: float) -> str:
    client().hincrby(f"runs:{tag}", count_sleep.request.id, 1)
    client().rpush(f"started:{tag}", count_sleep.request.id)
    time.sleep(sleep_s)
    client().hincrby(f"done:{tag}", count_sleep.request.id, 1)
    return count_sleep.request.id


@app.task
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def exit_task() -> None:
    sys.exit(3)


@app.task
def bad_result() -> object:
    return object()


@app.task
def socket_module() -> str:
    """Where ``socket.socket`` comes from in the worker: 'gevent._socket3' when patched."""
    return socket.socket.__module__


@app.task
def whoami() -> int:
    return os.getpid()


@app.task(ignore_result=True)
def quiet() -> int:
    return 1
