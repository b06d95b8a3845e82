"""A worker's life with real processes, signals and Redis servers: start against a broker that
is down, the hard exit on a second signal, dead letters that answer their callers, the
per-task log line, the heartbeat that carries no arguments, the hybrid children that start
only when needed, and the hint for an exhausted redis-py pool."""

from __future__ import annotations

import signal
import time

import orjson
import psutil
import pytest
import redis

from greenq import GreenQ, admin
from greenq.broker.keys import Keys
from greenq.embedded import RedisServer, bundled_binary, free_port
from greenq.exceptions import ResultTimeout, TaskError
from tests.apps import basic


def _wait(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (a state, not a duration)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _heartbeat(r: redis.Redis) -> dict:
    names = [n.decode() for n in r.smembers(Keys.WORKERS)]
    assert len(names) == 1, names
    raw = r.get(Keys.worker(names[0]))
    return orjson.loads(raw) if raw else {}


def test_second_sigint_fails_running_early_ack_tasks_and_leaves_late_ones_for_recovery(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    worker = start_worker("-c", "5", "--lost-timeout", "30")
    early = [basic.count_sleep.delay("hard", 60) for _ in range(3)]
    late = basic.count_run_late.delay("hard", 60)
    _wait(lambda: r.llen("started:hard") == 4, what="four running tasks")
    worker.signal(signal.SIGINT)
    worker.wait_for("waiting for 4 running")
    worker.signal(signal.SIGINT)
    assert worker.wait(30) == 1
    for result in early:
        with pytest.raises(TaskError) as failed:
            try:
                result.get(timeout=5)
            except ResultTimeout:
                raise AssertionError(worker.output) from None
        assert failed.value.exc_type == "WorkerLostError"
        assert "second SIGINT" in failed.value.exc_message and "worker@" in failed.value.exc_message
        assert result.id in worker.output  # the log names each abandoned task
    assert late.state == "PENDING"  # unacked: another worker runs it again
    assert r.xpending(Keys.stream("default"), "greenq")["pending"] == 1


def test_a_misspelled_task_name_fails_its_result_with_the_reason(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    start_worker("-c", "5")
    result = app.send_task("tests.apps.basic.ad", args=[1, 2])
    with pytest.raises(TaskError) as failed:
        result.get(timeout=10)
    assert failed.value.exc_type == "DeadLettered"
    assert "unknown task 'tests.apps.basic.ad'" in failed.value.exc_message
    dead = r.xrange(Keys.dead("default"))
    assert [fields[b"reason"] for _, fields in dead] == [b"unknown task 'tests.apps.basic.ad'"]


def test_a_worker_started_before_redis_waits_for_it(start_worker) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = start_worker("-c", "5", url=url, ready=False, env={"GREENQ_BROKER_CONNECTION_TIMEOUT": "60"})
    worker.wait_for(r"unavailable.*retrying in")
    assert f":{port}" in worker.output
    server = RedisServer(bundled_binary(), port=port).start()
    try:
        worker.wait_for("worker ready", timeout=30)
        producer = GreenQ("late", broker=url)
        assert producer.send_task("tests.apps.basic.add", args=[2, 3]).get(timeout=10) == 5
        producer.close()
    finally:
        worker.stop()
        server.stop()


def test_a_worker_gives_up_on_an_unreachable_broker_after_the_timeout(start_worker) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    worker = start_worker("-c", "5", url=url, ready=False, env={"GREENQ_BROKER_CONNECTION_TIMEOUT": "1"})
    assert worker.wait(30) != 0
    assert "broker_connection_timeout" in worker.output and "gave up after 1 s" in worker.output
    assert "secret" not in worker.output  # the URL is masked in every line
    assert "Traceback" not in worker.output


def test_one_log_line_per_finished_task_at_info_unless_switched_off(app: GreenQ, start_worker) -> None:
    worker = start_worker("-c", "5")
    ok = basic.add.delay(2, 3)
    assert ok.get(timeout=10) == 5
    worker.wait_for(rf"task tests\.apps\.basic\.add\[{ok.id}\] SUCCESS in \d+\.\d+s")
    failed = basic.fail.delay("boom")
    failed.get(timeout=10, propagate=False)
    worker.wait_for(rf"task tests\.apps\.basic\.fail\[{failed.id}\] FAILURE in")
    worker.stop()
    quiet = start_worker("-c", "5", env={"GREENQ_WORKER_LOG_TASKS": "false"})
    second = basic.add.delay(1, 1)
    assert second.get(timeout=10) == 2
    quiet.signal(signal.SIGTERM)
    assert quiet.wait(30) == 0
    assert second.id not in quiet.output and "tasks registered" in quiet.output


def test_the_heartbeat_lists_running_tasks_without_their_arguments_unless_asked(
    app: GreenQ, r: redis.Redis, start_worker
) -> None:
    start_worker("-c", "5", "--lost-timeout", "2")
    secret = "token-7f3a9c"
    running = basic.count_sleep.apply_async(args=(secret, 30))
    _wait(lambda: r.llen(f"started:{secret}") == 1, what="the task to start")
    record = _wait(lambda: (hb := _heartbeat(r)) and hb["active"] and hb, what="an active entry")
    assert record["active"] == [
        {"id": running.id, "task": "tests.apps.basic.count_sleep", "started": record["active"][0]["started"]}
    ]
    assert secret.encode() not in r.get(Keys.worker(record["consumer"]))
    r.set(Keys.ask(record["consumer"]), orjson.dumps([running.id]), ex=30)
    asked = _wait(lambda: _heartbeat(r).get("args"), what="the asked-for arguments")
    assert orjson.loads(asked[running.id]) == {"args": [secret, 30], "kwargs": {}}
    assert [w["consumer"] for w in admin.workers(app.broker)] == [record["consumer"]]


def test_hybrid_children_start_with_the_first_cpu_task_not_at_start_up(app: GreenQ, start_worker) -> None:
    worker = start_worker("-c", "20", env={"GREENQ_WORKER_CPU_WORKERS": "1"})
    worker.wait_for("started with the first one")
    assert basic.add.delay(1, 2).get(timeout=10) == 3
    assert psutil.Process(worker.pid).children(recursive=True) == []
    child_pid = basic.burn.delay(1000).get(timeout=30)
    assert child_pid != worker.pid
    assert child_pid in [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]


def test_an_exhausted_redis_py_pool_fails_with_a_hint(redis_url: str, start_worker) -> None:
    start_worker("-c", "300", app="tests.apps.pool_exhaust")
    producer = GreenQ("exhaust", broker=redis_url)
    results = [producer.send_task("tests.apps.pool_exhaust.hold_connection", args=[2]) for _ in range(150)]
    errors = []
    for result in results:
        try:
            result.get(timeout=30)
        except TaskError as exc:
            errors.append(exc)
    assert errors, "150 tasks at once on a 100-connection pool: some must fail"
    assert all("Too many connections" in e.exc_message for e in errors)
    assert all("app.redis" in e.exc_message and "BlockingConnectionPool" in e.exc_message for e in errors)
    assert "app.redis" in (errors[0].traceback or "")
    producer.close()
