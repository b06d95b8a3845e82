"""A worker's start-up (issue 25), with real worker processes: whatever start-up does to go faster,
the tasks run under the garbage collector setting the worker documents (``worker_gc_threshold``).

The worker imports this module as its app (``-A tests.worker.test_startup``): its one task
reports the collector's state from inside the worker.
"""

from __future__ import annotations

import gc

import pytest

from greenq import GreenQ

app = GreenQ("startup")


@app.task(name="startup.gc_state")
def gc_state() -> list[int]:
    """[collector on?, youngest generation's threshold, objects frozen out of collections]."""
    return [int(gc.isenabled()), gc.get_threshold()[0], gc.get_freeze_count()]


@pytest.mark.parametrize(("threshold", "frozen"), [("10000", True), ("0", False)])
def test_tasks_run_with_the_collector_on_at_the_configured_threshold(
    redis_url: str, start_worker, threshold: str, frozen: bool
) -> None:
    start_worker("-c", "5", app="tests.worker.test_startup", env={"GREENQ_WORKER_GC_THRESHOLD": threshold})
    producer = GreenQ("startup", broker=redis_url)
    try:
        enabled, youngest, frozen_count = producer.send_task("startup.gc_state").get(timeout=20)
    finally:
        producer.close()
    assert enabled == 1
    # 0 leaves Python's own setting; a threshold also freezes what start-up made
    assert youngest == (10_000 if frozen else gc.get_threshold()[0])
    assert (frozen_count > 0) is frozen
