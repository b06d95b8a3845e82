"""RedisBroker's round trips, directly, on every available redis-server (6.2 bundled, system 7)."""

from __future__ import annotations

import time

import redis

from greenq import GreenQ
from greenq.broker.redis import GROUP, Keys, RedisBroker


def _setup(url: str) -> tuple[GreenQ, RedisBroker, object]:
    app = GreenQ("broker-test", broker=url)
    broker = app.broker
    return app, broker, broker.connect("test", 1.0)


def test_fetch_respects_count_and_priority_bands(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.enqueue_many([("t.low", [i], None) for i in range(5)])
    app.enqueue_many([("t.high", [i], None) for i in range(3)], priority=9)
    app.enqueue_many([("t.mid", [i], None) for i in range(3)], priority=5)
    first = broker.fetch(link, ["default"], "c1", 4, 0)
    assert [d.priority for d in first] == [9, 9, 9, 5]
    rest = broker.fetch(link, ["default"], "c1", 100, 0)
    assert [d.priority for d in rest] == [5, 5, 0, 0, 0, 0, 0]
    assert broker.fetch(link, ["default"], "c1", 100, 0) == []
    pending = redis.Redis.from_url(any_redis_url).xpending(Keys.stream("default"), GROUP)["pending"]
    assert pending == 5


def test_blocking_fetch_wakes_on_a_new_message(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    assert broker.fetch(link, ["default"], "c1", 10, 50) == []
    app.send_task("t.x", [1])
    got = broker.fetch(link, ["default"], "c1", 10, 2000)
    assert len(got) == 1


def test_flush_acks_and_stores_results_atomically(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(3)])
    got = broker.fetch(link, ["default"], "c1", 10, 0)
    broker.flush(link, got, [("id1", b'{"state":"SUCCESS"}')], 5000)
    r = redis.Redis.from_url(any_redis_url)
    assert r.xlen(Keys.stream("default")) == 0
    assert r.xpending(Keys.stream("default"), GROUP)["pending"] == 0
    assert broker.read_result("id1") == b'{"state":"SUCCESS"}'
    assert 0 < r.pttl(Keys.result("id1")) <= 5000


def test_requeue_returns_reserved_messages_once(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(4)])
    got = broker.fetch(link, ["default"], "c1", 10, 0)
    assert broker.requeue(link, got) == 4
    assert broker.requeue(link, got) == 0
    again = broker.fetch(link, ["default"], "c2", 10, 0)
    assert sorted(d.body for d in again) == sorted(d.body for d in got)
    assert all(d.deliveries == 1 for d in again)


def test_recover_requeues_a_dead_consumers_messages_and_dead_letters_at_max(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.send_task("t.x", [1])
    broker.heartbeat(link, "alive", b"{}", 10_000, ["default"])
    broker.fetch(link, ["default"], "dead1", 10, 0)  # dead1 never sent a heartbeat
    assert broker.recover(link, ["default"], "alive", max_deliveries=3) == (1, 0)
    for expected_delivery in (2, 3):
        got = broker.fetch(link, ["default"], f"dead{expected_delivery}", 10, 0)
        assert [d.deliveries for d in got] == [expected_delivery]
        outcome = broker.recover(link, ["default"], "alive", max_deliveries=3)
    assert outcome == (0, 1)
    dead = redis.Redis.from_url(any_redis_url).xrange(Keys.dead("default"))
    assert dead[0][1][b"reason"] == b"delivery 3 killed its worker"
    consumers = redis.Redis.from_url(any_redis_url).xinfo_consumers(Keys.stream("default"), GROUP)
    assert [c["name"] for c in consumers] == [b"alive"] or consumers == []


def test_recover_leaves_live_consumers_alone(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.send_task("t.x", [1])
    broker.heartbeat(link, "busy", b"{}", 10_000, ["default"])
    broker.fetch(link, ["default"], "busy", 10, 0)
    assert broker.recover(link, ["default"], "other", max_deliveries=3) == (0, 0)


def test_move_due_moves_only_due_messages_into_their_band(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.send_task("t.later", [1], countdown=60)
    app.send_task("t.soon", [1], eta=time.time() + 0.05, priority=7)
    r = redis.Redis.from_url(any_redis_url)
    first = broker.move_due(link, ["default"])
    assert first is not None and first <= 0.06
    deadline = time.time() + 5
    while r.xlen(Keys.stream("default", 7)) == 0 and time.time() < deadline:
        broker.move_due(link, ["default"])
    assert r.xlen(Keys.stream("default", 7)) == 1
    assert r.zcard(Keys.delayed("default")) == 1
    assert 55 < broker.move_due(link, ["default"]) <= 60


def test_ack_to_start_reports_messages_recovered_by_others(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(3)])
    got = broker.fetch(link, ["default"], "slow", 10, 0)  # "slow" has no heartbeat: looks dead
    broker.heartbeat(link, "other", b"{}", 10_000, ["default"])
    assert broker.recover(link, ["default"], "other", max_deliveries=5) == (3, 0)
    assert broker.start_batch(link, got, ["a", "b"]) == ([False, False, False], [False, False])
    again = broker.fetch(link, ["default"], "other", 10, 0)
    assert broker.ack_to_start(link, again) == [True, True, True]


def test_dead_letters_are_capped_and_drops_counted(any_redis_url: str) -> None:
    from greenq import admin

    app = GreenQ("cap", broker=any_redis_url, dead_letter_max=3)
    broker, link = app.broker, app.broker.connect("test")
    app.enqueue_many([("t.x", [i], None) for i in range(5)])
    for delivery in broker.fetch(link, ["default"], "c1", 10, 0):
        broker.dead_letter(link, delivery, "test", "c1")
    r = redis.Redis.from_url(any_redis_url)
    assert r.xlen(Keys.dead("default")) == 3
    first = r.xrange(Keys.dead("default"))[0][1][b"m"]
    assert b"\"args\":[2]" in first  # the two oldest were dropped
    stats = admin.queue_stats(broker, "default")
    assert (stats.dead, stats.dead_dropped) == (3, 2)


def test_start_batch_retry_after_a_lost_reply_still_runs_what_this_worker_acked(any_redis_url: str) -> None:
    app, broker, link = _setup(any_redis_url)
    app.enqueue_many([("t.x", [i], None) for i in range(2)])
    got = broker.fetch(link, ["default"], "w1", 10, 0)
    broker.start_batch(link, got, [])  # acked, but pretend the reply never arrived
    assert broker.start_batch(link, got, [], retry=True)[0] == [True, True]
    app.send_task("t.y", [1])
    taken = broker.fetch(link, ["default"], "slow", 10, 0)
    broker.heartbeat(link, "other", b"{}", 10_000, ["default"])
    broker.recover(link, ["default"], "other", max_deliveries=5)
    assert broker.start_batch(link, taken, [], retry=True)[0] == [False]  # recovered: not ours
