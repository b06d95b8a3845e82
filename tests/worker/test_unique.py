"""Unique enqueue on a real Redis with real workers: one message however many concurrent
enqueues of a key, the key held while the task waits, runs or waits to retry, freed when it
ends, by its TTL, and by recovery once a SIGKILLed worker is found dead; ``overlap=False``
schedules; and an app that does not use it sends exactly what it sent before."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from greenq.broker.keys import Keys, enqueue_commands
from greenq.message import Message, decode, encode

APP = "tests.apps.unique_app"
STREAM = Keys.stream("default")


@pytest.fixture
def uapp(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """tests/apps/unique_app.py as a producer, pointed at this test's Redis."""
    from tests.apps import unique_app

    monkeypatch.setenv("GREENQ_BROKER_URL", redis_url)
    unique_app.app.close()
    unique_app.app._settings = None
    unique_app._client = None
    yield unique_app
    unique_app.app.close()
    unique_app.app._settings = None


def until(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_concurrent_unique_enqueues_of_one_key_add_one_message(uapp, r: redis.Redis) -> None:
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def enqueue() -> None:
        start.wait()
        got = [uapp.by_args_long.delay(7).id for _ in range(50)]
        with lock:
            ids.extend(got)

    threads = [threading.Thread(target=enqueue) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(ids) == 1000
    assert r.xlen(STREAM) == 1
    (entry,) = r.xrange(STREAM)
    message = decode(entry[1][b"m"])
    assert set(ids) == {message.id}  # every call got the one task's id (ids are random per call)
    assert message.unique is not None and message.unique.startswith("tests.apps.unique_app.by_args_long:")
    assert r.get(Keys.unique("default", message.unique)) == message.id.encode()
    # the same with an explicit task id as the key
    ids2 = [uapp.hold.apply_async(("x",), task_id="refresh:42", unique=True).id for _ in range(5)]
    assert ids2 == ["refresh:42"] * 5 and r.xlen(STREAM) == 2


def test_key_held_while_waiting_and_running_and_freed_when_done(uapp, r: redis.Redis, start_worker) -> None:
    key = Keys.unique("default", "refresh:1")
    first = uapp.hold.apply_async(("a",), task_id="refresh:1", unique=True)
    assert first.id == "refresh:1"
    again = uapp.app.send_task("tests.apps.unique_app.hold", ("a",), task_id="refresh:1", unique=True)
    assert again.id == "refresh:1" and r.xlen(STREAM) == 1  # waiting: nothing added
    assert 0 < r.pttl(key) <= 3_600_000  # task_unique_ttl
    start_worker("-c", "4", app=APP)
    until(lambda: r.llen("started:a") == 1, what="the task to start")
    assert uapp.hold.apply_async(("a",), task_id="refresh:1", unique=True).id == "refresh:1"
    assert r.xlen(STREAM) == 0  # running: nothing added (the early-acked entry is gone)
    r.set("gate:a", 1)
    assert first.get(timeout=20) == "a"
    until(lambda: not r.exists(key), what="the key to be freed")
    r.delete("gate:a")
    uapp.hold.apply_async(("a",), task_id="refresh:1", unique=True)
    until(lambda: r.llen("started:a") == 2, what="the second run")  # a new enqueue runs again
    r.set("gate:a", 1)


def test_unique_for_is_keyed_by_arguments_and_expires(uapp, r: redis.Redis) -> None:
    a = uapp.by_args.delay(1)
    assert uapp.by_args.delay(1).id == a.id
    b = uapp.by_args.delay(2)
    assert b.id != a.id and r.xlen(STREAM) == 2
    many = uapp.app.enqueue_many([(uapp.by_args, (3,), None)] * 3 + [(uapp.by_args, (1,), None)])
    assert many[0].id == many[1].id == many[2].id != a.id and many[3].id == a.id
    assert r.xlen(STREAM) == 3
    key = Keys.unique("default", decode(r.xrange(STREAM)[0][1][b"m"]).unique or "")
    assert 0 < r.pttl(key) <= 2000  # unique_for=2
    until(lambda: not r.exists(key), timeout=5, what="the key's TTL")
    assert uapp.by_args.delay(1).id != a.id and r.xlen(STREAM) == 4


def test_sigkilled_worker_early_ack_key_freed_by_recovery(uapp, r: redis.Redis, start_worker) -> None:
    key = Keys.unique("default", "sk:1")
    victim = start_worker("-c", "2", "--lost-timeout", "2", "-n", "victim@%h", app=APP)
    uapp.hold.apply_async(("sk",), task_id="sk:1", unique=True)
    until(lambda: r.llen("started:sk") == 1, what="the task to start")
    until(lambda: r.keys("greenq:unique-held:*"), what="the heartbeat to list the held key")
    (held,) = r.keys("greenq:unique-held:*")
    assert r.hgetall(held) == {key.encode(): b"sk:1"}
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    assert r.get(key) == b"sk:1"  # nobody finished it: still held
    start_worker("-c", "2", "--lost-timeout", "2", "-n", "rescuer@%h", app=APP)
    until(lambda: not r.exists(key), timeout=20, what="recovery to free the key")
    assert not r.exists(held)
    r.set("gate:sk", 1)
    uapp.hold.apply_async(("sk",), task_id="sk:1", unique=True)
    until(lambda: r.llen("started:sk") == 2, what="a new run once freed")


def test_retry_keeps_the_key_until_the_final_outcome(uapp, r: redis.Redis, start_worker) -> None:
    key = Keys.unique("default", "fl:1")
    result = uapp.flaky.apply_async(("f",), task_id="fl:1", unique=True)
    start_worker("-c", "2", app=APP)
    until(lambda: r.zcard(Keys.delayed("default")) == 1, what="the retry in the delayed set")
    # Waiting to retry is still waiting: the key stays (checked across the flush that follows).
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert r.get(key) == b"fl:1"
        time.sleep(0.02)
    assert uapp.flaky.apply_async(("f",), task_id="fl:1", unique=True).id == "fl:1"
    assert r.zcard(Keys.delayed("default")) + r.xlen(STREAM) == 1  # nothing added
    assert result.get(timeout=20) == "f"
    until(lambda: not r.exists(key), what="the key freed after SUCCESS")
    assert r.lrange("attempts:f", 0, -1) == [b"0", b"1"]


def test_overlap_false_schedule_never_overlaps_and_fires_again(r: redis.Redis, start_worker) -> None:
    worker = start_worker("-c", "5", app=APP, env={"UNIQUE_SCHEDULE": "1"})
    until(lambda: r.llen("tick-end") >= 2, timeout=30, what="two finished runs")
    worker.wait_for(r"schedule slow-tick skipped slow-tick@\d+: the previous run is still")
    starts = [float(x) for x in r.lrange("tick-start", 0, -1)]
    ends = [float(x) for x in r.lrange("tick-end", 0, -1)]
    assert len(starts) <= len(ends) + 1
    for index in range(1, len(starts)):
        assert starts[index] >= ends[index - 1], f"run {index} started before run {index - 1} ended"


def test_plain_enqueue_layout_is_unchanged() -> None:
    message = Message(id="abc", task="t.add", args=(2, 3), created=1.5)
    body = encode(message)
    assert body == (
        b'{"v":1,"id":"abc","task":"t.add","args":[2,3],"kwargs":{},"queue":"default",'
        b'"priority":0,"eta":null,"expires":null,"retries":0,"created":1.5}'
    )
    assert enqueue_commands([(message, body)], set()) == [("XADD", STREAM, "*", "m", body)]
    later = message.with_changes(eta=time.time() + 60)
    (command,) = enqueue_commands([(later, b"x")], set())
    assert command[:2] == ("ZADD", Keys.delayed("default"))
    assert decode(body).unique is None
    unique = message.with_changes(unique="k", unique_ttl_ms=1000)
    assert encode(unique).endswith(b',"created":1.5,"u":"k"}') and decode(encode(unique)).unique == "k"
    (command,) = enqueue_commands([(unique, b"x")], set())
    assert command[0] == "EVAL" and command[3] == Keys.unique("default", "k")


def test_plain_producer_builds_no_unique_message(uapp) -> None:
    message, body = uapp.app.build_message("tests.apps.unique_app.hold", ("x",))
    assert message.unique is None and b'"u"' not in body
    with pytest.raises(ValueError, match="needs a task_id"):
        uapp.app.build_message("tests.apps.unique_app.hold", ("x",), unique=True)


def test_unique_enqueue_is_refused_where_the_holder_cannot_be_returned(uapp, r: redis.Redis) -> None:
    """From asyncio and with on_commit the caller would get an id that may never run: refused."""
    import asyncio

    from greenq.exceptions import ConfigError

    with pytest.raises(ConfigError, match="not supported from asyncio"):
        asyncio.run(uapp.by_args_long.adelay(7))
    with pytest.raises(ConfigError, match="cannot wait for on_commit"):
        uapp.app._send([uapp.app.build_message("tests.apps.unique_app.by_args_long", [7])], on_commit=True)
    assert r.keys("greenq:*unique*") == []
    assert uapp.by_args.delay(1).id  # the plain sync path still works
