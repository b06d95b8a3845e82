"""A worker on many queues (issue 23, item 5): a wake-up costs the same round trips for 20 or
100 queues as for one, in -Q order, and a real worker drains what was sent over 100 queues."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import redis

from greenq import GreenQ
from greenq.broker.keys import Keys

QUEUES = [f"q{i}" for i in range(20)]  # 200 band streams: past wake.BLOCK_ALL_MAX


def _calls(r: redis.Redis, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def _when_blocked(r: redis.Redis, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` once the reserve under test is blocked in Redis."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while int(r.info("clients")["blocked_clients"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _args(deliveries: list) -> list:
    return [(d.queue, orjson.loads(d.body)["args"][0]) for d in deliveries]


def test_a_wake_up_on_twenty_queues_runs_one_fetch_and_a_refill_only_where_messages_are(
    redis_url: str, r: redis.Redis
) -> None:
    app = GreenQ("many", broker=redis_url)
    channel = app.broker.channel(1.0)
    for queue in QUEUES:  # each queue has had a default-priority message: its band 0 exists
        app.send_task("t.x", [queue], queue=queue)
    got, drained = channel.reserve(QUEUES, "c1", 200, 0)
    assert [q for q, _ in _args(got)] == QUEUES and drained  # in -Q order
    assert channel.reserve(QUEUES, "c1", 200, 20, drained=True) == ([], True)  # waited, timed out
    evals, reads = _calls(r, "eval"), _calls(r, "xread")
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["woke"], queue="q17"))
    got, drained = channel.reserve(QUEUES, "c1", 200, 5000, drained=True)
    thread.join()
    assert _args(got) == [("q17", "woke")] and drained
    # One fetch.lua, not one per queue; two XREADs: the wait, and (after the timed-out wait)
    # one look without blocking at the bands the wait leaves out.
    assert (_calls(r, "eval") - evals, _calls(r, "xread") - reads) == (1, 2)
    # Busy refill: one non-blocking XREAD finds the two queues that got messages since; fetch.lua
    # runs on those only, in -Q order.
    app.send_task("t.x", ["b"], queue="q9")
    app.send_task("t.x", ["a"], queue="q3")
    evals, reads = _calls(r, "eval"), _calls(r, "xread")
    got, _ = channel.reserve(QUEUES, "c1", 200, 0)
    assert _args(got) == [("q3", "a"), ("q9", "b")]
    assert (_calls(r, "eval") - evals, _calls(r, "xread") - reads) == (2, 1)


def test_the_first_message_at_a_new_priority_is_taken_by_the_next_wait(
    redis_url: str, r: redis.Redis
) -> None:
    """Past BLOCK_ALL_MAX bands, a wait names only bands that have had messages (and priority
    0): a message at a priority never used before is found by the next call, not lost."""
    app = GreenQ("many", broker=redis_url)
    channel = app.broker.channel(1.0)
    assert channel.reserve(QUEUES, "c1", 200, 0) == ([], True)
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["p7"], queue="q4", priority=7))
    first, _ = channel.reserve(QUEUES, "c1", 200, 300, drained=True)
    thread.join()
    got = first or channel.reserve(QUEUES, "c1", 200, 300, drained=True)[0]
    assert [(d.queue, d.priority) for d in got] == [("q4", 7)]
    assert r.xlen(Keys.stream("q4", 7)) == 1  # reserved (pending), not acked


def test_a_worker_on_a_hundred_queues_drains_them_all(app: GreenQ, start_worker, r: redis.Redis) -> None:
    from tests.apps import basic

    queues = [f"m{i}" for i in range(100)]
    worker = start_worker("-P", "gevent", "-c", "20", "-Q", ",".join(queues))
    results = [basic.add.apply_async((i, 1), queue=queues[(i * 37) % 100]) for i in range(300)]
    assert [result.get(timeout=60) for result in results] == [i + 1 for i in range(300)]
    assert sum(r.xlen(Keys.stream(q)) for q in queues) == 0
    assert worker.proc.poll() is None
