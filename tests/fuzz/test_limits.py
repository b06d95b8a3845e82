"""Resource limits (issue 24, item 4): what a worker does with inputs and outputs too big to hold.

* a message over ``max_message_bytes`` that reaches a worker anyway (written by another client)
  is dead-lettered with the reason, without being decoded;
* a task returning a result too big to store gets a clear FAILURE instead of taking the
  worker's (or Redis's) memory;
* a flood of dead letters keeps the dead-letter stream at ``dead_letter_max`` and counts the rest.
"""

from __future__ import annotations

import json

import redis

from greenq.broker.keys import Keys
from tests.fuzz.strategies import envelope


def test_a_message_over_max_message_bytes_is_dead_lettered_not_run(r: redis.Redis, start_worker) -> None:
    worker = start_worker("-c", "2", env={"GREENQ_MAX_MESSAGE_BYTES": "4096"})
    big = json.dumps(envelope("tests.apps.basic.count_run", "big", ("x" * 10_000,), queue="default"))
    r.xadd(Keys.stream("default"), {"m": big.encode()})
    small = json.dumps(envelope("tests.apps.basic.count_run", "small", ("tag",), queue="default"))
    r.xadd(Keys.stream("default"), {"m": small.encode()})
    worker.wait_for(r"task tests.apps.basic.count_run\[small\] SUCCESS")
    dead = r.xrange(Keys.dead("default"))
    assert len(dead) == 1
    assert dead[0][1][b"m"] == big.encode()
    assert b"max_message_bytes" in dead[0][1][b"reason"]
    assert not r.exists("runs:" + "x" * 10_000), "the oversized message never ran"


def test_a_hundred_thousand_dead_letters_keep_the_stream_at_its_cap(r: redis.Redis, start_worker) -> None:
    total, cap = 100_000, 1_000
    pipe = r.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd(Keys.stream("default"), {"m": b"poison %d" % i})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    worker = start_worker("-c", "10", env={"GREENQ_DEAD_LETTER_MAX": str(cap)})
    probe = json.dumps(envelope("tests.apps.basic.count_run", "probe", ("probe",), queue="default"))
    r.xadd(Keys.stream("default"), {"m": probe.encode()})  # behind the flood, FIFO
    worker.wait_for(r"task tests.apps.basic.count_run\[probe\] SUCCESS", timeout=170)
    assert r.xlen(Keys.dead("default")) == cap
    assert int(r.get(Keys.dead_dropped("default"))) == total - cap
    newest = r.xrevrange(Keys.dead("default"), count=1)[0][1]
    assert newest[b"m"] == b"poison %d" % (total - 1) and newest[b"reason"].startswith(b"malformed")


def test_a_100_mb_result_is_a_clear_failure_and_never_reaches_redis(
    redis_url: str, r: redis.Redis, start_worker
) -> None:
    from greenq import GreenQ, TaskError

    start_worker("-c", "2", app="tests.apps.chaos_app")
    producer = GreenQ("limits", broker=redis_url)
    try:
        result = producer.send_task("tests.apps.chaos_app.sized", (100_000_000,))
        try:
            result.get(timeout=120)
        except TaskError as exc:
            assert exc.exc_type == "ResultTooLarge" and "result_max_bytes" in str(exc), exc
        else:
            raise AssertionError("a 100 MB result was stored")
        assert int(r.info("memory")["used_memory"]) < 50 * 2**20
        assert producer.send_task("tests.apps.chaos_app.sized", (10,)).get(timeout=30) == "x" * 10
    finally:
        producer.close()
