"""Tasks that leave evidence in Redis of what the worker did with them, for tests that must be
able to fail: an option is asserted by its effect, never by reading back the dataclass.

The broker comes from GREENQ_BROKER_URL (set by the fixtures). gevent is imported inside the
bodies that need it only, so that solo and prefork workers can load this module too.
"""

from __future__ import annotations

import os
import time

import redis

from greenq import GreenQ, SoftTimeLimitExceeded

app = GreenQ("evidence")
_client: list[redis.Redis] = []  # one per process, made on first use


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


@app.task(ignore_result=True)
def quiet(key: str) -> int:
    return int(client().incr(key))


@app.task(queue="evidence-q", priority=3)
def routed() -> str:
    return "routed"


def _hold(key: str) -> int:
    """Runs until ``key`` is set: meanwhile the test looks at the pending-entries list."""
    client().set(f"{key}:running", 1)
    deadline = time.monotonic() + 30
    while not client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@app.task(acks_late=True)
def late(key: str) -> int:
    return _hold(key)


@app.task
def early(key: str) -> int:
    return _hold(key)


@app.task(expires=0.2)
def expiring() -> str:
    return "ran"


@app.task(bind=True)
def bound(self: object, tag: str) -> list:
    return [tag, self.request.id]  # type: ignore[attr-defined]


@app.task(autoretry_for=(OSError,), max_retries=2, retry_backoff=0.2, retry_jitter=False)
def backoff(tag: str) -> None:
    """Fails every time; records when each attempt started."""
    client().rpush(f"attempts:{tag}", time.time())
    raise OSError("still broken")


@app.task(soft_time_limit=0.3, time_limit=5)
def soft_then_clean_up() -> str:
    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(time_limit=0.5)
def swallows_exception(tag: str) -> str:
    """A hard time limit must end this task though it catches every Exception."""
    import gevent

    client().incr(f"started:{tag}")
    try:
        gevent.sleep(10)
    except Exception:
        gevent.sleep(10)
    client().incr(f"finished:{tag}")
    return "kept its slot"


@app.task(time_limit=0.5)
def swallows_everything(tag: str) -> str:
    """Catches even BaseException, again and again: the pool must give its slot away."""
    import gevent

    client().incr(f"started:{tag}")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            gevent.sleep(0.05)
        except BaseException:
            client().incr(f"swallowed:{tag}")
    client().incr(f"finished:{tag}")
    return "kept its slot"


@app.task(cpu=True)
def pid_in_child() -> int:
    return os.getpid()


@app.task
def whoami() -> int:
    return os.getpid()


@app.task
def one_long_c_call(n: int) -> int:
    """One C call that holds the GIL throughout: a gevent worker's watchdog thread cannot sample."""
    return sum(range(n))


@app.task(queue="leased", concurrency_limit=1)
def hold(key: str) -> str:
    """Runs until ``key`` is set (30 s at most), holding the task's only lease: its lease and the
    message parked behind it can be seen on /metrics (tests/test_observability.py)."""
    client().incr(f"{key}:running")
    deadline = time.monotonic() + 30
    while not client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "held"
