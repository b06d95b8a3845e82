"""Global rate limits: held by every worker together, and never in the way of other tasks."""

from __future__ import annotations

from typing import Any

import redis

from tests.flow.conftest import wait_until

FLOW_APP = "tests.flow.flow_app"


def _busiest(starts: list[int], window_ms: int) -> int:
    """The most starts within any window of ``window_ms``."""
    most, first = 0, 0
    for last, stamp in enumerate(starts):
        while stamp - starts[first] >= window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_rate_limit_holds_across_four_workers(start_worker: Any, flow: Any, r: redis.Redis) -> None:
    """rated is "30/s": 390 tasks over 4 workers must take at least 13 s of the server's clock,
    and no 10-s window holds more than 30/s x 10 s + 10 %."""
    workers = [start_worker("-c", "20", "-Q", "rated", app=FLOW_APP, ready=False) for _ in range(4)]
    for worker in workers:
        worker.wait_for("worker ready")
    flow.rated.map([(i,) for i in range(390)])
    wait_until(lambda: r.llen("rated:starts") >= 390, timeout=60, what="390 rated tasks")
    starts = sorted(int(s) for s in r.lrange("rated:starts", 0, -1))
    busiest = _busiest(starts, 10_000)
    assert busiest <= 330, f"{busiest} starts in one 10-s window (limit 300 + 10 %)"
    assert busiest >= 240, f"only {busiest} starts in the busiest 10-s window: the limit starves the queue"
    assert starts[-1] - starts[0] >= 389 * 1000 / 30 * 0.9  # one slot per 33 ms, whoever runs it
    assert all(w.output.count("rated") == 0 or "Traceback" not in w.output for w in workers)


def test_an_unlimited_task_is_not_held_behind_a_limited_one(
    start_worker: Any, flow: Any, r: redis.Redis
) -> None:
    """100 slow_lane messages (5/s: 20 s of backlog) go first into the queue, then 200
    fast_lane ones: every fast_lane task finishes while most of the backlog still waits."""
    start_worker("-c", "20", "-Q", "mixed", app=FLOW_APP)
    flow.slow_lane.map([(i,) for i in range(100)])
    results = flow.fast_lane.map([(i,) for i in range(200)])
    for result in results:
        result.get(timeout=30)
    slow_done = int(r.get("slow_lane:done") or 0)
    waiting = r.zcard("greenq:{q:mixed}:delayed")
    assert slow_done < 100 and waiting > 0, (slow_done, waiting)
    assert slow_done + waiting <= 100
