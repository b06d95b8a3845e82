"""Worker counters and the broker-outage backoff shared by the consumer's loops. Imports:
stdlib only."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

BACKOFF_MAX_S = 2.0
RUNTIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Stats:
    """Counters shown in the heartbeat and ``greenq status``."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    revoked: int = 0
    dead_lettered: int = 0
    recovered: int = 0
    reconnects: int = 0
    started_at: float = field(default_factory=time.time)
    task_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    runtimes: dict[str, list[Any]] = field(default_factory=dict)  # task -> [buckets, total s, count]

    def record(self, task: str, state: str, runtime_s: float) -> None:
        """Count a finished task by name and state, and its runtime (read by greenq.metrics)."""
        self.task_counts[(task, state)] += 1
        entry = self.runtimes.get(task)
        if entry is None:
            entry = self.runtimes[task] = [[0] * len(RUNTIME_BUCKETS_S), 0.0, 0]
        index = bisect.bisect_left(RUNTIME_BUCKETS_S, runtime_s)
        if index < len(RUNTIME_BUCKETS_S):
            entry[0][index] += 1
        entry[1] += runtime_s
        entry[2] += 1


class Backoff:
    """Capped exponential backoff for broker outages, logging the outage once and the recovery."""

    def __init__(self, log: logging.LoggerAdapter[logging.Logger], what: str, stats: Stats) -> None:
        self.log, self.what, self.stats = log, what, stats
        self.delay = 0.0

    def failed(self, exc: Exception, stopping: threading.Event) -> None:
        if self.delay == 0.0:
            self.log.warning("%s: %s; retrying with backoff", self.what, exc)
        self.delay = min(BACKOFF_MAX_S, max(0.05, self.delay * 2))
        stopping.wait(self.delay)

    def ok(self) -> None:
        if self.delay:
            self.log.warning("%s: broker is back", self.what)
            self.stats.reconnects += 1
            self.delay = 0.0
