"""End-to-end: real ``greenq worker`` subprocesses against a real Redis."""

from __future__ import annotations

import datetime
import time

import pytest
import redis

from greenq import GreenQ, TaskError
from greenq.broker.keys import GROUP, Keys
from tests.apps import basic


def test_ten_thousand_tasks_from_map_each_run_exactly_once(app: GreenQ, r: redis.Redis, start_worker) -> None:
    start_worker("--pool", "gevent", "-c", "500")
    results = basic.count_run.map([("drain",)] * 10_000)
    ids = [res.get(timeout=120) for res in results]
    assert ids == [res.id for res in results]
    runs = r.hgetall("runs:drain")
    assert len(runs) == 10_000
    assert set(runs.values()) == {b"1"}
    assert r.xlen(Keys.stream("default")) == 0


def test_prefetch_multiplier_one_holds_at_most_concurrency(app: GreenQ, r: redis.Redis, start_worker) -> None:
    results = [basic.count_run_late.delay("pf", 1.0) for _ in range(50)]
    worker = start_worker("-c", "2", "--prefetch-multiplier", "1")
    most = 0
    for res in results[:4]:  # sample the pending-entries list while the first 4 run
        while not res.ready():
            try:
                pending = r.xpending(Keys.stream("default"), GROUP)["pending"]
            except redis.ResponseError:  # the worker has not created the group yet
                pending = 0
            most = max(most, pending)
            assert pending <= 2, f"worker held {pending} messages"
    assert most == 2
    assert r.xlen(Keys.stream("default")) >= 40  # the rest still wait in Redis, not in the worker
    worker.stop()


def _wait_until_blocked(r: redis.Redis) -> None:
    """Until a client waits in a blocking read: the idle worker's fetcher."""
    deadline = time.monotonic() + 20
    while int(r.info("clients")["blocked_clients"]) < 1:
        assert time.monotonic() < deadline, "the worker never blocked waiting for messages"
        time.sleep(0.005)


def test_idle_gevent_worker_gets_what_is_sent_while_it_waits_even_after_flushall(
    any_redis_url: str, start_worker
) -> None:
    producer = GreenQ("wake", broker=any_redis_url)
    r = redis.Redis.from_url(any_redis_url)
    worker = start_worker("--pool", "gevent", "-c", "50", url=any_redis_url)
    for i in range(3):
        _wait_until_blocked(r)
        assert producer.send_task("tests.apps.basic.add", [i, 1]).get(timeout=20) == i + 1
        _wait_until_blocked(r)
        r.flushall()  # deletes the streams under the blocked XREADGROUP
    assert producer.send_task("tests.apps.basic.add", [2, 3]).get(timeout=20) == 5
    assert "crashed" not in worker.output and "Traceback" not in worker.output


def test_worker_woken_by_a_burst_holds_at_most_its_capacity(any_redis_url: str, start_worker) -> None:
    producer = GreenQ("burst", broker=any_redis_url)
    r = redis.Redis.from_url(any_redis_url)
    # 10 x 1: one per band stream, the least capacity that waits with XREADGROUP
    start_worker("--pool", "gevent", "-c", "10", "--prefetch-multiplier", "1", url=any_redis_url)
    _wait_until_blocked(r)
    calls = [("tests.apps.basic.count_run_late", ("burst", 0.5), None)] * 40
    results = producer.enqueue_many(calls[:20], priority=5) + producer.enqueue_many(calls[20:])
    most = 0
    while not results[0].ready():
        pending = sum(r.xpending(Keys.stream("default", p), GROUP)["pending"] for p in (0, 5))
        most = max(most, pending)
        assert pending <= 10, f"worker held {pending} messages"
    assert most == 10
    assert [res.get(timeout=30) for res in results] == [res.id for res in results]


def test_gevent_worker_starts_a_prefilled_backlog_in_priority_order(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    low = basic.count_sleep.map([("order", 0.02)] * 30)
    high = basic.count_sleep.map([("order", 0.02)] * 15, priority=9)
    start_worker("--pool", "gevent", "-c", "5", "--prefetch-multiplier", "2")
    for res in low + high:
        res.get(timeout=30)
    started = [i.decode() for i in r.lrange("started:order", 0, -1)]
    assert set(started[:15]) == {res.id for res in high}


def test_gevent_worker_is_patched_and_runs_300_sleeps_concurrently(app: GreenQ, start_worker) -> None:
    start_worker("--pool", "gevent", "-c", "300")
    assert basic.socket_module.delay().get(timeout=10) == "gevent._socket3"
    spans = [res.get(timeout=60) for res in basic.sleep_span.map([(1.0,)] * 300)]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most >= 250, f"only {most} of 300 one-second sleeps overlapped"


def test_failures_are_recorded_and_the_worker_carries_on(app: GreenQ, start_worker) -> None:
    worker = start_worker("-c", "10")
    failed = basic.fail.delay("kaboom")
    with pytest.raises(TaskError) as info:
        failed.get(timeout=10)
    assert info.value.exc_type == "ValueError" and info.value.exc_message == "kaboom"
    assert "raise ValueError(message)" in info.value.traceback
    assert failed.state == "FAILURE"
    error = failed.get(timeout=1, propagate=False)
    assert isinstance(error, TaskError)
    exited = basic.exit_task.delay().get(timeout=10, propagate=False)
    assert exited.exc_type == "SystemExit"
    bad = basic.bad_result.delay().get(timeout=10, propagate=False)
    assert bad.exc_type == "TypeError" and "not JSON serialisable" in bad.exc_message
    assert basic.add.delay(2, 3).get(timeout=10) == 5
    assert worker.proc.poll() is None


def test_unknown_task_and_malformed_messages_are_dead_lettered(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    worker = start_worker("-c", "5")
    app.send_task("no.such.task", [1])
    r.xadd(Keys.stream("default"), {"m": b"{not json"})
    r.xadd(Keys.stream("default"), {"m": b'{"v": 99}'})
    assert basic.add.delay(1, 1).get(timeout=10) == 2
    worker.wait_for("dead-lettering", count=3)
    dead = r.xrange(Keys.dead("default"))
    reasons = sorted(entry[b"reason"].decode() for _, entry in dead)
    assert reasons[0].startswith("malformed message: invalid JSON")
    assert reasons[1] == "malformed message: unsupported protocol version 99"
    assert reasons[2] == "unknown task 'no.such.task'"
    assert {entry[b"m"] for _, entry in dead} >= {b"{not json", b'{"v": 99}'}
    assert r.xlen(Keys.stream("default")) == 0


def test_ignore_result_runs_the_task_and_writes_no_result(evidence, r: redis.Redis, start_worker) -> None:
    start_worker("-c", "5", app="tests.apps.evidence")
    quiet = evidence.quiet.delay("quiet-ran")
    deadline = time.monotonic() + 10
    while r.get("quiet-ran") is None:  # the evidence that it ran
        assert time.monotonic() < deadline, "the ignore_result task never ran"
        time.sleep(0.01)
    marker = evidence.whoami.delay()  # finishes after quiet: its result is flushed after quiet's outcome
    marker.get(timeout=10)
    assert r.get("quiet-ran") == b"1"
    assert r.exists(Keys.result(quiet.id)) == 0
    assert quiet.state == "PENDING"
    assert r.pttl(Keys.result(marker.id)) > 86_000_000  # results of other tasks are kept a day


def test_solo_pool_runs_in_the_worker_process_unpatched(app: GreenQ, start_worker) -> None:
    worker = start_worker("--pool", "solo")
    assert basic.whoami.delay().get(timeout=10) == worker.pid
    assert basic.socket_module.delay().get(timeout=10) == "socket"


def test_queues_are_consumed_in_the_order_given(app: GreenQ, r: redis.Redis, start_worker) -> None:
    low = [basic.count_run.apply_async(("order",), queue="low") for _ in range(20)]
    high = [basic.count_run.apply_async(("order",), queue="high") for _ in range(20)]
    start_worker("--pool", "solo", "-Q", "high,low", "--prefetch-multiplier", "1")
    for res in low + high:
        res.get(timeout=20)
    done = {res.id: float(res.info["date_done"]) for res in low + high}
    assert max(done[res.id] for res in high) <= min(done[res.id] for res in low)


def test_expired_task_is_revoked_not_run(app: GreenQ, r: redis.Redis, start_worker) -> None:
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    expired = basic.count_run.apply_async(("exp",), expires=past)
    fresh = basic.count_run.apply_async(("exp",), expires=60)
    start_worker("-c", "2")
    assert fresh.get(timeout=10) == fresh.id
    error = expired.get(timeout=10, propagate=False)
    assert expired.state == "REVOKED" and error.exc_message == "expired"
    assert r.hgetall("runs:exp") == {fresh.id.encode(): b"1"}
    # Acked with its REVOKED result: nothing is left in the stream for recovery to run again.
    assert r.xlen(Keys.stream("default")) == 0
    assert r.xpending(Keys.stream("default"), GROUP)["pending"] == 0


def test_track_started_shows_started_while_running(app: GreenQ, r: redis.Redis, start_worker) -> None:
    start_worker("-c", "2", env={"GREENQ_TASK_TRACK_STARTED": "true"})
    result = basic.count_sleep.delay("ts", 3.0)
    found = app.broker.wait_result(result.id, 10)
    assert found is not None and b'"state":"STARTED"' in found[1]
    assert result.state == "STARTED"
    assert result.get(timeout=10) == result.id


def test_signed_messages_run_and_unsigned_or_forged_are_dead_lettered(
    app: GreenQ, r: redis.Redis, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = start_worker(
        "-c", "2", env={"GREENQ_MESSAGE_SIGNING_KEY": "new", "GREENQ_MESSAGE_SIGNING_OLD_KEYS": "old"}
    )
    unsigned = basic.add.delay(1, 1)
    monkeypatch.setenv("GREENQ_MESSAGE_SIGNING_KEY", "old")
    app._settings = None
    rotated = basic.add.delay(2, 2)
    monkeypatch.setenv("GREENQ_MESSAGE_SIGNING_KEY", "wrong")
    app._settings = None
    forged = basic.add.delay(3, 3)
    monkeypatch.setenv("GREENQ_MESSAGE_SIGNING_KEY", "new")
    app._settings = None
    assert basic.add.delay(4, 4).get(timeout=10) == 8
    assert rotated.get(timeout=10) == 4
    worker.wait_for("dead-lettering", count=2)
    dead = r.xrange(Keys.dead("default"))
    assert sorted(e[b"reason"] for _, e in dead) == [b"signature missing or invalid"] * 2
    # Not run, and not left PENDING for ever: the caller learns why.
    for result in (unsigned, forged):
        with pytest.raises(TaskError) as failed:
            result.get(timeout=10)
        assert (failed.value.exc_type, failed.value.exc_message) == (
            "DeadLettered",
            "signature missing or invalid",
        )


def test_dead_letter_on_failure_keeps_the_original_message(app: GreenQ, r: redis.Redis, start_worker) -> None:
    start_worker("-c", "2")
    failed = basic.fail_to_dead.delay("disk full")
    failed.get(timeout=10, propagate=False)
    assert basic.add.delay(1, 1).get(timeout=10) == 2  # flushed in order after the failure
    [(_, entry)] = r.xrange(Keys.dead("default"))
    assert entry[b"reason"] == b"failed: RuntimeError: disk full"
    assert failed.id.encode() in entry[b"m"]
    basic.fail.delay("not dead-lettered").get(timeout=10, propagate=False)
    assert r.xlen(Keys.dead("default")) == 1


def test_worker_tunes_the_garbage_collector_unless_told_not_to(app: GreenQ, start_worker) -> None:
    worker = start_worker("-c", "5")
    threshold, frozen = basic.gc_settings.delay().get(timeout=30)
    assert threshold == 10_000 and frozen > 1000  # start-up objects are out of every collection
    worker.stop()
    start_worker("-c", "5", env={"GREENQ_WORKER_GC_THRESHOLD": "0"})
    assert basic.gc_settings.delay().get(timeout=30) == [700, 0]  # Python's own defaults
