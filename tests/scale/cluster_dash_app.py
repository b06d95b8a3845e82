"""Tasks for the dashboard-on-a-cluster test (tests/scale/test_cluster_dashboard.py). The broker
comes from GREENQ_BROKER_URL; ``flaky`` reads whether it is fixed in COUNTER_URL, a plain Redis
outside the cluster."""

from __future__ import annotations

import os

import redis

from greenq import GreenQ

app = GreenQ("cluster-dashboard")


@app.task
def work(index: int) -> int:
    return index


@app.task(dead_letter_on_failure=True)
def flaky(tag: str) -> str:
    """Fails, and is dead-lettered, until ``fixed:<tag>`` is set in COUNTER_URL."""
    counter = redis.Redis.from_url(os.environ["COUNTER_URL"])
    if not counter.exists(f"fixed:{tag}"):
        raise RuntimeError(f"{tag} is broken")
    counter.incr(f"ran:{tag}")
    return f"fixed {tag}"


@app.task
def parked(value: str) -> str:
    """Sent to a queue no worker reads: messages to see waiting."""
    return value
