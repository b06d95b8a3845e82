"""SoloPool: one job at a time, inline in the caller's thread. For debugging and ``--pool solo``.

Imports: pools.base only.
"""

from __future__ import annotations

from typing import Any

from greenq.pools.base import Job, OnDone, Runner


class SoloPool:
    """Runs each job to completion inside ``submit``; never more than one at a time."""

    kind = "solo"

    def __init__(self, runner: Runner, concurrency: int = 1) -> None:
        self.runner = runner
        self.concurrency = 1
        self._busy = False

    def start(self) -> None:
        pass

    def free_slots(self) -> int:
        return 0 if self._busy else 1

    def running(self) -> int:
        return 1 if self._busy else 0

    def submit(self, job: Job, on_done: OnDone) -> None:
        self._busy = True
        try:
            outcome = self.runner(job)
        finally:
            self._busy = False
        on_done(job, outcome)

    def stop(self, timeout_s: float | None) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"busy": self.running()}
