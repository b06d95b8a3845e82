"""Tasks the dashboard tests run on real workers. The broker comes from GREENQ_BROKER_URL."""

from __future__ import annotations

import time

import redis

from greenq import GreenQ

# A schedule for the Scheduled page; the tests' workers run with --no-schedule, so it never fires.
app = GreenQ(
    "dashboard-tests",
    beat_schedule={
        "nightly-report": {"task": "tests.dashboard.dash_app.parked", "schedule": "0 3 * * *", "args": ["n"]}
    },
)
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(app.conf.broker_url))
    return _client[0]


@app.task(queue="drain")
def work(index: int, sleep_s: float = 0.0) -> int:
    """A task for the live chart: finishes after ``sleep_s``."""
    time.sleep(sleep_s)
    return index


@app.task(queue="fragile", dead_letter_on_failure=True)
def flaky(tag: str, note: str = "") -> str:
    """Fails, and is dead-lettered, until a test sets ``fixed:<tag>``; then counts its run."""
    if not client().exists(f"fixed:{tag}"):
        raise RuntimeError(f"{tag} is broken")
    client().incr(f"ran:{tag}")
    return f"fixed {tag}"


@app.task(queue="parked")
def parked(value: str) -> str:
    """Never run by the tests' workers (nobody reads ``parked``): messages to peek and purge."""
    return value
