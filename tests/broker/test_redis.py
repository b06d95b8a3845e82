"""RedisBroker's round trips, directly, on every available redis-server (6.2 bundled, system 7)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import pytest
import redis

from greenq import GreenQ
from greenq.broker.channel import Channel
from greenq.broker.keys import GROUP, Keys
from greenq.broker.recovery import Upkeep
from greenq.exceptions import BrokerError
from greenq.message import decode


def _setup(url: str) -> tuple[GreenQ, Upkeep, Channel]:
    """An app, and a worker thread's two halves on one connection: liveness and messages."""
    app = GreenQ("broker-test", broker=url)
    channel = app.broker.channel(1.0)
    return app, app.broker.upkeep(channel.link), channel


def _fetch(channel: Channel, consumer: str, count: int, block_ms: int = 0) -> list:
    return channel.reserve(["default"], consumer, count, block_ms)[0]


def test_fetch_respects_count_and_priority_bands(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    app.enqueue_many([("t.low", [i], None) for i in range(5)])
    app.enqueue_many([("t.high", [i], None) for i in range(3)], priority=9)
    app.enqueue_many([("t.mid", [i], None) for i in range(3)], priority=5)
    first = _fetch(link, "c1", 4, 0)
    assert [d.priority for d in first] == [9, 9, 9, 5]
    rest = _fetch(link, "c1", 100, 0)
    assert [d.priority for d in rest] == [5, 5, 0, 0, 0, 0, 0]
    assert _fetch(link, "c1", 100, 0) == []
    pending = redis.Redis.from_url(any_redis_url).xpending(Keys.stream("default"), GROUP)["pending"]
    assert pending == 5


def test_blocking_fetch_wakes_on_a_new_message(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    assert _fetch(link, "c1", 10, 50) == []
    app.send_task("t.x", [1])
    got = _fetch(link, "c1", 10, 2000)
    assert len(got) == 1


def _when_blocked(url: str, action: Callable[[redis.Redis], object]) -> threading.Thread:
    """Run ``action`` in a thread as soon as some client is blocked in Redis (the reserve under test)."""
    r = redis.Redis.from_url(url)

    def run() -> None:
        deadline = time.monotonic() + 10
        while int(r.info("clients")["blocked_clients"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        action(r)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _evals(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))


def test_blocking_reserve_returns_the_messages_that_woke_it(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    r = redis.Redis.from_url(any_redis_url)
    # No band stream exists yet: the first blocking read creates them with their group.
    assert link.reserve(["default"], "c1", 100, 20) == ([], False)
    assert r.xinfo_groups(Keys.stream("default", 9))[0]["name"] == GROUP.encode()
    assert link.reserve(["default"], "c1", 100, 20) == ([], True)  # timed out: still empty
    thread = _when_blocked(any_redis_url, lambda _: app.send_task("t.x", [7], priority=3))
    evals = _evals(r)
    got, drained = link.reserve(["default"], "c1", 100, 5000, drained=True)
    thread.join()
    assert _evals(r) == evals  # reserved by the blocking read itself: no fetch.lua
    assert drained  # fewer than asked: the next call may block at once
    assert len(got) == 1
    delivery = got[0]
    assert (delivery.queue, delivery.priority, delivery.stream) == ("default", 3, Keys.stream("default", 3))
    assert (delivery.deliveries, orjson.loads(delivery.body)["args"]) == (1, [7])
    assert r.xpending(Keys.stream("default", 3), GROUP)["consumers"] == [{"name": b"c1", "pending": 1}]


def test_blocking_reserve_never_takes_more_than_asked(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    link.create_groups(Keys.bands("default"))
    app.enqueue_many([("t.x", [i], None) for i in range(5)], priority=9)
    app.enqueue_many([("t.x", [i], None) for i in range(5)])
    # 20 asked over 10 bands: at most 2 from each. As many as asked from a band means more may
    # be waiting there: not drained.
    got, drained = link.reserve(["default"], "c1", 20, 1000, drained=True)
    assert [d.priority for d in got] == [9, 9, 0, 0]
    assert not drained
    # Fewer than one per band: "drained" is not trusted; fetch.lua reserves in priority order
    # (and an empty queue would be waited on with XREAD on the tails).
    got, _ = link.reserve(["default"], "c1", 3, 1000, drained=True)
    assert [d.priority for d in got] == [9, 9, 9]


def test_blocking_reads_of_two_consumers_on_one_broker_stay_apart(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    other = app.broker.channel(1.0)
    link.create_groups(Keys.bands("default"))
    for consumer, conn, arg in (("c1", link, 1), ("c2", other, 2), ("c1", link, 3)):
        app.send_task("t.x", [arg])
        got, _ = conn.reserve(["default"], consumer, 100, 1000, drained=True)
        assert [orjson.loads(d.body)["args"] for d in got] == [[arg]]
    pending = redis.Redis.from_url(any_redis_url).xpending(Keys.stream("default"), GROUP)["consumers"]
    assert sorted((c["name"], c["pending"]) for c in pending) == [(b"c1", 2), (b"c2", 1)]


def test_small_reserve_waits_on_the_tails_its_last_fetch_saw(any_redis_url: str) -> None:
    """Fewer than one message per band: XREAD BLOCK on the tails, then fetch.lua. After a fetch
    that left the bands empty, the next wait needs no second fetch.lua first."""
    app, _up, link = _setup(any_redis_url)
    r = redis.Redis.from_url(any_redis_url)
    app.send_task("t.x", [1])
    got, drained = link.reserve(["default"], "c1", 3, 1000)
    assert [orjson.loads(d.body)["args"] for d in got] == [[1]] and drained
    evals = _evals(r)
    assert link.reserve(["default"], "c1", 3, 20, drained=True) == ([], True)  # timed out
    thread = _when_blocked(any_redis_url, lambda _: app.send_task("t.x", [2], priority=6))
    got, drained = link.reserve(["default"], "c1", 3, 5000, drained=True)
    thread.join()
    assert _evals(r) - evals == 1  # the fetch.lua that reserved what woke the XREAD
    assert [(d.priority, orjson.loads(d.body)["args"]) for d in got] == [(6, [2])] and drained


def test_blocking_reserve_survives_its_streams_being_deleted(any_redis_url: str) -> None:
    """Redis 7 fails a blocked XREADGROUP whose stream is deleted (UNBLOCKED); Redis 6.2 waits on,
    then fails it with NOGROUP when a producer makes the stream again. Either way the groups are
    made again and the next reserve gets the message."""
    app, _up, link = _setup(any_redis_url)
    link.create_groups(Keys.bands("default"))

    def flush_then_send(r: redis.Redis) -> None:
        r.flushall()
        app.send_task("t.x", [1])

    thread = _when_blocked(any_redis_url, flush_then_send)
    got, drained = link.reserve(["default"], "c1", 100, 5000, drained=True)
    thread.join()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got, drained = link.reserve(["default"], "c1", 100, 200, drained=drained)
    assert [orjson.loads(d.body)["args"] for d in got] == [[1]]


def test_blocking_reserve_raises_on_other_errors(any_redis_url: str) -> None:
    _, _broker, link = _setup(any_redis_url)
    redis.Redis.from_url(any_redis_url).set(Keys.stream("default", 4), "not a stream")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        link.reserve(["default"], "c1", 100, 20, drained=True)


def test_flush_acks_and_stores_results_atomically(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(3)])
    got = _fetch(link, "c1", 10, 0)
    link.flush(got, [("id1", b'{"state":"SUCCESS"}')], 5000)
    r = redis.Redis.from_url(any_redis_url)
    assert r.xlen(Keys.stream("default")) == 0
    assert r.xpending(Keys.stream("default"), GROUP)["pending"] == 0
    assert app.broker.read_result("id1") == b'{"state":"SUCCESS"}'
    assert 0 < r.pttl(Keys.result("id1")) <= 5000


def test_requeue_returns_reserved_messages_once(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(4)])
    got = _fetch(link, "c1", 10, 0)
    assert link.requeue(got) == 4
    assert link.requeue(got) == 0
    again = _fetch(link, "c2", 10, 0)
    assert sorted(d.body for d in again) == sorted(d.body for d in got)
    assert all(d.deliveries == 1 for d in again)


def test_recover_requeues_a_dead_consumers_messages_and_dead_letters_at_max(any_redis_url: str) -> None:
    app, up, link = _setup(any_redis_url)
    app.send_task("t.x", [1])
    up.heartbeat("alive", b"{}", 10_000, ["default"])
    _fetch(link, "dead1", 10, 0)  # dead1 never sent a heartbeat
    assert up.recover(["default"], "alive", max_deliveries=3) == (1, [])
    for expected_delivery in (2, 3):
        got = _fetch(link, f"dead{expected_delivery}", 10, 0)
        assert [d.deliveries for d in got] == [expected_delivery]
        outcome = up.recover(["default"], "alive", max_deliveries=3)
    requeued, dead_bodies = outcome
    assert requeued == 0 and [decode(body).task for body in dead_bodies] == ["t.x"]
    dead = redis.Redis.from_url(any_redis_url).xrange(Keys.dead("default"))
    assert dead[0][1][b"reason"] == b"delivery 3 killed its worker"
    consumers = redis.Redis.from_url(any_redis_url).xinfo_consumers(Keys.stream("default"), GROUP)
    assert [c["name"] for c in consumers] == [b"alive"] or consumers == []


def test_recover_leaves_live_consumers_alone(any_redis_url: str) -> None:
    app, up, link = _setup(any_redis_url)
    app.send_task("t.x", [1])
    up.heartbeat("busy", b"{}", 10_000, ["default"])
    _fetch(link, "busy", 10, 0)
    assert up.recover(["default"], "other", max_deliveries=3) == (0, [])


def test_move_due_moves_only_due_messages_into_their_band(any_redis_url: str) -> None:
    app, up, _link = _setup(any_redis_url)
    app.send_task("t.later", [1], countdown=60)
    app.send_task("t.soon", [1], eta=time.time() + 0.05, priority=7)
    r = redis.Redis.from_url(any_redis_url)
    first = up.move_due(["default"])
    assert first is not None and first <= 0.06
    deadline = time.time() + 5
    while r.xlen(Keys.stream("default", 7)) == 0 and time.time() < deadline:
        up.move_due(["default"])
    assert r.xlen(Keys.stream("default", 7)) == 1
    assert r.zcard(Keys.delayed("default")) == 1
    assert 55 < up.move_due(["default"]) <= 60


def test_ack_to_start_reports_messages_recovered_by_others(any_redis_url: str) -> None:
    app, up, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(3)])
    got = _fetch(link, "slow", 10, 0)  # "slow" has no heartbeat: looks dead
    up.heartbeat("other", b"{}", 10_000, ["default"])
    assert up.recover(["default"], "other", max_deliveries=5) == (3, [])
    assert link.start_batch(got, ["a", "b"]) == ([False, False, False], [False, False])
    again = _fetch(link, "other", 10, 0)
    assert link.start_batch(again, [])[0] == [True, True, True]


def test_dead_letters_are_capped_and_drops_counted(any_redis_url: str) -> None:
    from greenq import admin

    app = GreenQ("cap", broker=any_redis_url, dead_letter_max=3)
    broker, link = app.broker, app.broker.channel()
    app.enqueue_many([("t.x", [i], None) for i in range(5)])
    for delivery in _fetch(link, "c1", 10, 0):
        link.dead_letter(delivery, "test", "c1")
    r = redis.Redis.from_url(any_redis_url)
    assert r.xlen(Keys.dead("default")) == 3
    first = r.xrange(Keys.dead("default"))[0][1][b"m"]
    assert b'"args":[2]' in first  # the two oldest were dropped
    stats = admin.queue_stats(broker, "default")
    assert (stats.dead, stats.dead_dropped) == (3, 2)


def test_start_batch_acks_every_early_message_and_flags_only_the_revoked(any_redis_url: str) -> None:
    app, _up, link = _setup(any_redis_url)
    for priority in (0, 9, 0, 9, 5, 0):
        app.send_task("t.x", [priority], priority=priority)
    got = _fetch(link, "w1", 10, 0)
    task_ids = [decode(d.body).id for d in got]
    doomed = {task_ids[1], task_ids[4]}
    app.control.revoke(sorted(doomed))
    held, revoked = link.start_batch(got[:5], task_ids)  # the last one is late-acked
    assert held == [True] * 5
    assert revoked == [task_id in doomed for task_id in task_ids]
    r = redis.Redis.from_url(any_redis_url)
    bands = [band for band in Keys.bands("default") if r.exists(band)]
    assert sum(r.xlen(band) for band in bands) == 1  # early-acked entries are deleted, in every band
    assert sum(r.xpending(band, GROUP)["pending"] for band in bands) == 1
    assert link.start_batch([], task_ids[:1]) == ([], [False])


def test_start_batch_retry_after_a_lost_reply_still_runs_what_this_worker_acked(any_redis_url: str) -> None:
    app, up, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(2)])
    got = _fetch(link, "w1", 10, 0)
    link.start_batch(got, [])  # acked, but pretend the reply never arrived
    assert link.start_batch(got, [], retry=True)[0] == [True, True]
    app.send_task("t.y", [1])
    taken = _fetch(link, "slow", 10, 0)
    up.heartbeat("other", b"{}", 10_000, ["default"])
    up.recover(["default"], "other", max_deliveries=5)
    assert link.start_batch(taken, [], retry=True)[0] == [False]  # recovered: not ours
