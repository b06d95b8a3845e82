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
    """One shared client per process, sized for a -c 500 worker; COUNTER_URL lets a test count
    runs in a Redis other than the broker (for broker-outage tests)."""
    global _client
    if _client is None:
        url = os.environ.get("COUNTER_URL") or app.conf.broker_url
        _client = redis.Redis.from_url(url, max_connections=600)
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
    client().hset(f"pid:{tag}", count_run_late.request.id, os.getpid())
    client().hsetnx(f"firstpid:{tag}", count_run_late.request.id, os.getpid())
    client().hincrby(f"runs:{tag}", count_run_late.request.id, 1)
    client().rpush(f"started:{tag}", count_run_late.request.id)
    time.sleep(sleep_s)
    client().hincrby(f"done:{tag}", count_run_late.request.id, 1)
    return count_run_late.request.id


@app.task
def count_sleep(tag: str, sleep_s: float) -> str:
    client().hset(f"pid:{tag}", count_sleep.request.id, os.getpid())
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


@app.task(acks_late=True)
def die(tag: str) -> None:
    """Kills its worker process every time: a poison message."""
    client().incr(f"deaths:{tag}")
    os._exit(1)


@app.task(cpu=True)
def burn(n: int) -> int:
    """Pure-Python CPU work; returns the pid that ran it."""
    total = 0
    for i in range(n):
        total += i * i
    return os.getpid()


@app.task(time_limit=1)
def spin_forever() -> None:
    counter = 0
    while True:
        counter += 1


@app.task(soft_time_limit=0.5)
def soft_limited() -> str:
    from greenq import SoftTimeLimitExceeded

    counter = 0
    try:
        while True:
            counter += 1
    except SoftTimeLimitExceeded:
        return "cleaned up"


@app.task
def exit_process() -> None:
    os._exit(1)


@app.task(acks_late=True)
def exit_process_late(tag: str) -> None:
    client().incr(f"deaths:{tag}")
    os._exit(1)


@app.task
def hog(megabytes: int) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    return os.getpid()


@app.task
def busy_loop(seconds: float) -> int:
    """CPU work that forgot cpu=True: blocks a gevent worker's hub."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return os.getpid()


@app.task(cpu=True)
def niceness_in_child() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


@app.task(cpu=True)
def busy_loop_cpu(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return os.getpid()


@app.task(bind=True, max_retries=5)
def flaky(self, tag: str, fail_times: int) -> int:
    """Fails ``fail_times`` times through self.retry(), then returns how many retries it took."""
    attempt = client().hincrby(f"runs:{tag}", self.request.id, 1)
    client().rpush(f"seen-retries:{tag}", self.request.retries)
    if attempt <= fail_times:
        raise self.retry(exc=OSError(f"attempt {attempt}"), countdown=0.1)
    return self.request.retries


@app.task(autoretry_for=(OSError,), retry_backoff=0.05, retry_jitter=False, max_retries=3, acks_late=True)
def always_fails(tag: str) -> None:
    client().hincrby(f"runs:{tag}", always_fails.request.id, 1)
    raise OSError("still broken")


@app.task(bind=True)
def on_time(self, tag: str) -> float:
    """Records how late it started against its ETA (seconds; negative would mean early)."""
    lateness = time.time() - (self.request.eta or time.time())
    client().hincrby(f"runs:{tag}", self.request.id, 1)
    client().hset(f"lateness:{tag}", self.request.id, lateness)
    return lateness


def _http_probe(url: str) -> list:
    from greenq import http

    response = http.get(url, params={"q": "1"}, timeout=5)
    response.raise_for_status()
    client = http.client()
    return [response.status_code, response.json(), id(client), os.getpid(), client.transport.name]


@app.task
def http_get(url: str) -> list:
    return _http_probe(url)


@app.task(cpu=True)
def http_get_in_child(url: str) -> list:
    return _http_probe(url)


@app.task
def http_timeout(url: str) -> str:
    from greenq import http

    try:
        http.get(url, timeout=0.2)
    except http.Timeout:
        return "timeout"
    return "answered"


@app.task(bind=True, max_retries=2, default_retry_delay=0.05)
def http_refused(self, url: str) -> None:
    from greenq import http

    client().hincrby("http-refused", self.request.id, 1)
    try:
        http.get(url, timeout=2)
    except http.ConnectionError as exc:
        raise self.retry(exc=exc, countdown=0.05) from exc


@app.task
def http_status(url: str) -> str:
    from greenq import http

    try:
        http.get(url).raise_for_status()
    except http.HTTPError as exc:
        return f"{type(exc).__name__} {exc.response.status_code}"
    return "ok"


@app.task(dead_letter_on_failure=True)
def fail_to_dead(message: str) -> None:
    raise RuntimeError(message)


@app.task
def incr_shared(key: str) -> int:
    """One INCR through app.redis, the shared per-process client."""
    return int(app.redis.incr(key))


@app.task
def gc_settings() -> list:
    """The worker process's collector: [youngest threshold, objects frozen at start-up]."""
    import gc

    return [gc.get_threshold()[0], gc.get_freeze_count()]


@app.task
def redis_client_id() -> list:
    return [id(app.redis), os.getpid(), app.redis.connection_pool.max_connections]


@app.task
def sleep_span(seconds: float) -> list:
    """Sleeps; returns [start, end] so tests can count how many ran at once."""
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]
