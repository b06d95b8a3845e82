"""The producer side: enqueue, batch enqueue, bad input, unreachable broker, results, no gevent."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from greenq import BrokerUnavailable, ConfigError, EncodeError, GreenQ, MessageTooLarge, ResultTimeout
from greenq.broker.keys import GROUP, Keys
from greenq.broker.stack import ConnectionStack
from greenq.message import decode, encode, sign, verify
from greenq.results import SUCCESS, result_payload

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Foo:
    x: int


def _app(url: str, **settings: object) -> GreenQ:
    app = GreenQ("producer-test", broker=url, **settings)

    @app.task
    def work(a: int, when: object = None) -> None: ...

    return app


def _work(app: GreenQ) -> Any:
    """The test app's own task (``app.tasks`` also holds the builtin ``greenq.starmap``)."""
    return next(task for name, task in app.tasks.items() if name.endswith(".work"))


def _redis_keys(r: redis.Redis) -> list[bytes]:
    return sorted(r.keys("*"))


def test_delay_writes_one_versioned_message_to_the_queue_stream(r: redis.Redis, redis_url: str) -> None:
    app = _app(redis_url)
    result = _work(app).delay(1, when="now")
    entries = r.xrange(Keys.stream("default"))
    assert len(entries) == 1
    envelope = json.loads(entries[0][1][b"m"])
    assert envelope["v"] == 1 and envelope["id"] == result.id
    assert envelope["args"] == [1] and envelope["kwargs"] == {"when": "now"}
    assert envelope["queue"] == "default"


def test_non_serialisable_argument_names_it_and_sends_nothing(r: redis.Redis, redis_url: str) -> None:
    app = _app(redis_url)
    task = _work(app)
    with pytest.raises(EncodeError, match=r"kwargs\['when'\]: type Foo is not JSON serialisable"):
        task.delay(1, when=Foo(1))
    with pytest.raises(EncodeError, match=r"args\[0\]: type datetime is not JSON serialisable"):
        task.delay(datetime.datetime.now())
    with pytest.raises(EncodeError, match=r"args\[0\]: type set"):
        task.map([(1,), ({1, 2},)])
    assert _redis_keys(r) == []


def test_message_over_max_bytes_raises_with_size_and_limit(r: redis.Redis, redis_url: str) -> None:
    app = _app(redis_url, max_message_bytes=1000)
    task = _work(app)
    with pytest.raises(MessageTooLarge, match=r"is [\d,]+ bytes, over max_message_bytes=1,000"):
        task.delay(1, when="x" * 2000)
    assert _redis_keys(r) == []


def test_wrong_arguments_for_the_function_fail_at_enqueue(r: redis.Redis, redis_url: str) -> None:
    task = _work(_app(redis_url))
    with pytest.raises(TypeError, match="missing a required argument: 'a'"):
        task.delay()
    with pytest.raises(TypeError, match="unexpected keyword argument 'b'"):
        task.delay(1, b=2)
    assert _redis_keys(r) == []


@pytest.mark.parametrize(
    ("signature", "good", "bad"),
    [
        ("def f(a, b=1): ...", [(1,), (1, 2)], [(), (1, 2, 3)]),
        ("def f(*args): ...", [(), (1, 2, 3)], []),
        ("def f(a, *, key): ...", [], [(1,)]),  # keyword-only without default: bind() decides
        ("def f(self, a): ...", [(1,)], [(), (1, 2)]),  # bind=True: self is not the caller's
    ],
)
def test_positional_argument_counts_are_checked_at_enqueue(signature: str, good: list, bad: list) -> None:
    namespace: dict[str, object] = {}
    exec(signature, namespace)  # a fixed function header from the parameters above
    app = GreenQ("t", broker="redis://127.0.0.1:1/0")
    task = app.task(name="t.f", bind=signature.startswith("def f(self"))(namespace["f"])
    for args in good:
        assert app.build_message(task.name, args)[0].args == args
    for args in bad:
        with pytest.raises(TypeError, match=r"t\.f: "):
            app.build_message(task.name, args)


def test_invalid_priority_and_queue_names_fail_at_enqueue(r: redis.Redis, redis_url: str) -> None:
    task = _work(_app(redis_url))
    with pytest.raises(ConfigError, match="priority 12"):
        task.apply_async((1,), priority=12)
    with pytest.raises(ConfigError, match="invalid queue name"):
        task.apply_async((1,), queue="a{b}")
    assert _redis_keys(r) == []


def test_duplicate_task_name_and_unknown_option_are_errors() -> None:
    app = GreenQ("t")

    @app.task(name="same")
    def one() -> None: ...

    with pytest.raises(ConfigError, match="registered twice"):

        @app.task(name="same")
        def two() -> None: ...

    with pytest.raises(ConfigError, match=r"unknown task option 'acks_lat'.*did you mean 'acks_late'"):
        app.task(acks_lat=True)(lambda: None)


def test_every_task_option_takes_effect(evidence, r: redis.Redis, start_worker) -> None:
    """Each option of @app.task changes what the producer writes or what the worker does
    (tests/apps/evidence.py); ignore_result and the hard time_limit have their own tests."""
    # queue + priority: the message waits in that queue's priority band, and a worker reading
    # only that queue runs it.
    routed = evidence.routed.delay()
    assert r.xlen(Keys.stream("evidence-q", 3)) == 1 and r.xlen(Keys.stream("default")) == 0
    # expires: a message that waited past it is revoked by the worker, not run.
    expiring = evidence.expiring.delay()
    deadline = time.time() + 0.2
    while time.time() <= deadline:  # waits for the clock, not for a process
        time.sleep(0.05)
    worker = start_worker(
        "--pool",
        "gevent",
        "-c",
        "4",
        "--cpu-workers",
        "1",
        "-Q",
        "default,evidence-q",
        app="tests.apps.evidence",
    )
    assert routed.get(timeout=20) == "routed"
    assert expiring.get(timeout=20, propagate=False).exc_message == "expired"
    # bind: the body gets the task itself and sees its own request.
    bound = evidence.bound.delay("b")
    assert bound.get(timeout=20) == ["b", bound.id]
    # cpu: runs in the worker's child process, not in a greenlet.
    assert evidence.pid_in_child.delay().get(timeout=30) != worker.pid
    # soft_time_limit: raised inside the body, which may clean up.
    assert evidence.soft_then_clean_up.delay().get(timeout=20) == "cleaned up"
    # autoretry_for + max_retries + retry_backoff, retry_jitter=False: 1 + 2 attempts, each
    # retry no sooner than its full backoff (0.2 s, then 0.4 s).
    retried = evidence.backoff.delay("bo")
    error = retried.get(timeout=30, propagate=False)
    assert error.exc_type == "OSError" and retried.info["retries"] == 2
    starts = [float(t) for t in r.lrange("attempts:bo", 0, -1)]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.2 - 0.01 and starts[2] - starts[1] >= 0.4 - 0.01
    # acks_late: the message stays pending while the body runs; early ack: it does not.
    for task, held in ((evidence.late, True), (evidence.early, False)):
        key = f"go:{task.name}"
        result = task.delay(key)
        _wait_for_key(r, f"{key}:running")
        assert (result.id in _pending_task_ids(r)) is held, task.name
        r.set(key, 1)
        assert result.get(timeout=20) == worker.pid


def _pending_task_ids(r: redis.Redis) -> set[str]:
    """Task ids of the default queue's messages delivered to a worker and not yet acked."""
    stream = Keys.stream("default")
    ids = [entry["message_id"] for entry in r.xpending_range(stream, GROUP, "-", "+", 100)]
    return {json.loads(r.xrange(stream, i, i)[0][1][b"m"])["id"] for i in ids}


def _wait_for_key(r: redis.Redis, key: str) -> None:
    deadline = time.monotonic() + 20
    while not r.exists(key):
        assert time.monotonic() < deadline, f"{key} was never set"
        time.sleep(0.01)


def test_map_pipelines_thousands_and_countdown_goes_to_delayed(r: redis.Redis, redis_url: str) -> None:
    app = _app(redis_url)
    task = _work(app)
    results = task.map([(i,) for i in range(12_000)])
    assert len({res.id for res in results}) == 12_000
    assert r.xlen(Keys.stream("default")) == 12_000
    # chunks are written before earlier replies are read: the stream keeps the calls' order
    queued = [orjson.loads(fields[b"m"])["args"][0] for _, fields in r.xrange(Keys.stream("default"))]
    assert queued == list(range(12_000))
    task.apply_async((1,), countdown=60, priority=4)
    members = r.zrange(Keys.delayed("default"), 0, -1, withscores=True)
    assert len(members) == 1 and members[0][0].startswith(b"4|")
    assert members[0][1] > (time.time() + 55) * 1000


def test_enqueue_many_mixes_tasks_and_names(r: redis.Redis, redis_url: str) -> None:
    app = _app(redis_url)
    task = _work(app)
    results = app.enqueue_many([(task, (1,), None), ("remote.task", [2], {"k": 1})], queue="bulk")
    assert len(results) == 2
    assert r.xlen(Keys.stream("bulk")) == 2


def test_unreachable_broker_raises_quickly_with_masked_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        app = GreenQ("t", broker=f"redis://user:hunter2@127.0.0.1:{port}/0", broker_connect_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            app.send_task("x.y", [1])
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(info.value) and "user:***@127.0.0.1" in str(info.value)


def test_producer_connections_are_capped_and_a_waiting_caller_gets_a_clear_error(
    redis_url: str, r: redis.Redis
) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, protocol=2, client_name="stack-test")
    stack = ConnectionStack(redis_url, pool.make_connection, limit=1, wait_s=0.3)
    holder = threading.Thread(target=stack.execute, args=([("BLPOP", "wake", 10)],))
    holder.start()
    while not any(c["cmd"] == "blpop" for c in r.client_list()):  # the holder has the only one
        time.sleep(0.01)
    with pytest.raises(BrokerUnavailable, match=r"all 1 connections busy for 0\.3 s"):
        stack.call("PING")
    r.rpush("wake", "1")
    holder.join(10)
    assert stack.call("PING") == b"PONG"  # the connection came back to the stack
    assert sum(c["name"] == "stack-test" for c in r.client_list()) == 1  # no second one was made
    stack.close()


def test_a_forked_child_gets_its_own_producer_connections(redis_url: str, r: redis.Redis) -> None:
    app = GreenQ("t", broker=redis_url)
    app.send_task("x.y", ["parent"])
    pid = os.fork()
    if pid == 0:  # the child: enqueue on its own socket, not the parent's
        try:
            app.send_task("x.y", ["child"])
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    app.send_task("x.y", ["parent again"])  # the parent's socket is not shared or broken
    bodies = [json.loads(f[b"m"])["args"][0] for _, f in r.xrange(Keys.stream("default"))]
    assert bodies == ["parent", "child", "parent again"]


def test_unresponsive_broker_times_out_instead_of_hanging() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts TCP but never answers
        app = GreenQ("t", broker=f"redis://127.0.0.1:{server.getsockname()[1]}/0", broker_socket_timeout=1.0)
        with pytest.raises(BrokerUnavailable, match="unavailable"):
            app.send_task("x.y", [1])


def test_result_get_times_out_naming_the_id_and_reads_stored_results(redis_url: str, r: redis.Redis) -> None:
    app = _app(redis_url)
    result = app.AsyncResult("abc123")
    assert result.state == "PENDING"
    with pytest.raises(ResultTimeout, match="abc123") as info:
        result.get(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    r.xadd(Keys.result("abc123"), {"r": result_payload("abc123", "t", SUCCESS, result={"n": 1})})
    assert result.get(timeout=1) == {"n": 1}
    assert result.state == SUCCESS and result.ready() and result.successful()
    result.forget()
    assert r.exists(Keys.result("abc123")) == 0
    assert app.AsyncResult("abc123").state == "PENDING"


def test_signing_round_trip_and_forgery_detection() -> None:
    app = GreenQ("t")
    message, body = app.build_message("x.y", [1])
    signed = sign(body, "k1")
    assert verify(signed, ["old", "k1"]) and not verify(signed, ["k2"]) and not verify(body, ["k1"])
    assert not verify(signed.replace(b"[1]", b"[2]"), ["k1"])
    assert decode(signed).id == message.id
    assert decode(encode(message, None, "k1")).args == [1]


def test_producer_never_imports_gevent(redis_url: str, start_worker) -> None:
    """A producer that enqueues and waits for results, from a gevent worker, stays gevent-free."""
    start_worker("--pool", "gevent", "-c", "5")
    code = (
        "import sys\n"
        "from tests.apps.basic import add\n"
        "r = add.delay(1, 2)\n"
        "print(r.get(timeout=20), sum(x.get(timeout=20) for x in add.map([(i, 1) for i in range(10)])))\n"
        "print('gevent' in sys.modules, 'greenq.worker.consumer' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**env, "GREENQ_BROKER_URL": redis_url},
        timeout=60,
    ).stdout.split()
    assert out == ["3", "55", "False", "False"]
