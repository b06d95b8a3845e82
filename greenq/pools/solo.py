"""SoloPool: one job at a time, inline in the caller's thread. For debugging and ``--pool solo``.

No time limits: nothing can interrupt the caller's own thread (use gevent or prefork).
Imports: pools.base only.
"""

from __future__ import annotations

import threading
from typing import Any

from greenq.pools.base import Job, OnDone, Runner


class SoloPool:
    """Runs each job to completion inside ``submit``; never more than one at a time."""

    kind = "solo"

    def __init__(self, runner: Runner, concurrency: int = 1) -> None:
        self.runner = runner
        self.concurrency = 1
        self._busy = False
        self._idle = threading.Condition()  # stop() may be called from another thread (a signal)

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 0 if self._busy else 1

    def running(self) -> int:
        return 1 if self._busy else 0

    def submit(self, job: Job, on_done: OnDone) -> None:
        """Run ``job`` now, in this thread; returns after ``on_done`` has run."""
        self._busy = True
        try:
            outcome = self.runner(job)
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()
        on_done(job, outcome)

    def stop(self, timeout_s: float | None) -> bool:
        """Wait up to ``timeout_s`` for a job running in another thread; True if none runs."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"busy": self.running()}
