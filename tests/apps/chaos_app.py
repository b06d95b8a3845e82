"""Tasks for the chaos run (scripts/chaos.py, tests/test_chaos.py).

Every run of every task appends a line to a ledger kept outside the system under test: one
append-only file per process under ``CHAOS_LEDGER_DIR`` (``O_APPEND``, one ``write`` per line,
so a SIGKILL loses nothing already written and no Redis fault touches it). A line is JSON:
``{"ev": "start"|"end", "id", "task", "r" (retries), "d" (delivery), "eta", "t" (time.time()),
"pid", "w" (consumer)}``. The checker (scripts/chaos/checker.py) reads them all back.
The broker comes from GREENQ_BROKER_URL; ``CHAOS_TICK_S`` adds a periodic schedule.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from greenq import GreenQ

TICK_S = float(os.environ.get("CHAOS_TICK_S") or 0)
app = GreenQ(
    "chaos",
    beat_schedule={"tick": {"task": "tests.apps.chaos_app.tick", "schedule": TICK_S}} if TICK_S else {},
)
_fd: dict[int, int] = {}  # pid -> ledger fd (a forked child opens its own file)


def record(event: str, request: Any, **extra: Any) -> None:
    """Append one ledger line for the current task run."""
    pid = os.getpid()
    fd = _fd.get(pid)
    if fd is None:
        folder = os.environ["CHAOS_LEDGER_DIR"]
        fd = _fd[pid] = os.open(
            os.path.join(folder, f"run-{pid}-{os.urandom(3).hex()}.jsonl"),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT,
            0o644,
        )
    line = {
        "ev": event,
        "id": request.id,
        "task": request.task,
        "r": request.retries,
        "d": request.deliveries,
        "eta": request.eta,
        "t": time.time(),
        "pid": pid,
        "w": request.worker,
        **extra,
    }
    os.write(fd, orjson.dumps(line) + b"\n")


@app.task(bind=True)
def early(self: Any, sleep_s: float) -> str:
    """Early ack (the default): at most once."""
    record("start", self.request)
    time.sleep(sleep_s)
    record("end", self.request)
    return "ok"


@app.task(bind=True, acks_late=True)
def late(self: Any, sleep_s: float) -> str:
    """Late ack: at least once, one final result."""
    record("start", self.request)
    time.sleep(sleep_s)
    record("end", self.request)
    return "ok"


@app.task(bind=True, acks_late=True, max_retries=None)
def late_retry(self: Any, fails: int) -> int:
    """Late ack, asks for ``fails`` retries (a short countdown each), then succeeds."""
    record("start", self.request)
    if self.request.retries < fails:
        record("end", self.request, retry=True)
        raise self.retry(countdown=0.2 + 0.1 * self.request.retries)
    record("end", self.request)
    return self.request.retries


@app.task(bind=True, max_retries=None)
def early_retry(self: Any, fails: int) -> int:
    """Early ack with retries: each attempt at most once."""
    record("start", self.request)
    if self.request.retries < fails:
        record("end", self.request, retry=True)
        raise self.retry(countdown=0.3)
    record("end", self.request)
    return self.request.retries


@app.task(bind=True, acks_late=True, cpu=True)
def crunch(self: Any, rounds: int) -> int:
    """CPU work: a child process in the hybrid worker, a greenlet or prefork child elsewhere."""
    record("start", self.request)
    total = 0
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    record("end", self.request)
    return total


@app.task(bind=True, dead_letter_on_failure=True)
def doomed(self: Any) -> None:
    """Always fails, and is dead-lettered for it."""
    record("start", self.request)
    record("end", self.request)
    raise ValueError("doomed to fail")


@app.task(bind=True, acks_late=True, unique_for=60)
def unique_late(self: Any, key: int, sleep_s: float) -> str:
    """Unique by its arguments: the producers enqueue a few keys again and again."""
    record("start", self.request)
    time.sleep(sleep_s)
    record("end", self.request)
    return "ok"


@app.task(bind=True)
def tick(self: Any) -> None:
    """The periodic schedule's task (``CHAOS_TICK_S``): each fire time once."""
    record("start", self.request)
    record("end", self.request)


@app.task
def sized(size: int) -> str:
    """Returns a string of ``size`` bytes (the result-size limit test)."""
    return "x" * size
