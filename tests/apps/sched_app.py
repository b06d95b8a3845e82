"""A periodic schedule for the scheduler tests: ``tick`` every SCHED_EVERY seconds (default 1),
with the catch-up policy SCHED_CATCH_UP (default latest). Each run records its task id, which
names the fire time (``<schedule>@<epoch ms>``)."""

from __future__ import annotations

import os
import time

import redis

from greenq import GreenQ

EVERY = float(os.environ.get("SCHED_EVERY", "1"))
app = GreenQ(
    "sched",
    beat_schedule={
        "tick-every": {
            "task": os.environ.get("SCHED_TASK", "tests.apps.sched_app.tick"),
            "schedule": EVERY,
            "args": ["t"],
            "catch_up": os.environ.get("SCHED_CATCH_UP", "latest"),
        }
    },
)
_client: redis.Redis | None = None


@app.task(bind=True)
def tick(self, tag: str) -> str:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url or "")
    _client.rpush(f"ticks-at:{tag}", f"{self.request.id} {time.time()}")  # when it started
    _client.rpush(f"ticks:{tag}", self.request.id)
    return str(self.request.id)
