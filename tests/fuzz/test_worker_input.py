"""Whatever another client XADDs into a queue's stream, a real worker never crashes or stalls.

One worker process (and its own Redis) per test module, reused by every example. Each example
puts a body straight into the stream, then enqueues a good task behind it: the good task must
finish (the worker keeps draining), and the body must be dead-lettered with a reason, unless it
is a runnable envelope, which then runs and leaves a result. After each property the worker
must still be alive with no crashed loop.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from greenq import GreenQ
from greenq.broker.keys import Keys
from greenq.embedded import RedisServer, bundled_binary
from greenq.exceptions import DecodeError
from greenq.message import decode, new_id
from tests.apps import basic
from tests.conftest import WorkerProcess
from tests.fuzz.strategies import WORKER, envelope, json_values

QUEUE = "fuzz"
ADD = "tests.apps.basic.add"


@dataclass
class Harness:
    r: redis.Redis
    worker: WorkerProcess
    producer: GreenQ

    def feed(self, body: bytes, band: int = 0) -> None:
        """XADD ``body`` raw, then check what became of it and that a good task behind it runs."""
        dead = Keys.dead(QUEUE)
        last = self.r.xrevrange(dead, count=1)
        self.r.xadd(Keys.stream(QUEUE, band), {"m": body})
        assert self.producer.send_task(ADD, (1, 2), queue=QUEUE).get(timeout=10) == 3
        runnable = _runnable(body)
        if runnable is None:
            newest = self.r.xrevrange(dead, count=1)
            assert newest and newest != last, f"{body[:80]!r} was not dead-lettered"
            fields = newest[0][1]
            assert fields[b"m"] == body and fields[b"reason"], fields
        else:
            record = self.producer.AsyncResult(runnable).get(timeout=10, propagate=False)
            assert record is not None or self.r.exists(Keys.result(runnable))

    def assert_healthy(self) -> None:
        assert self.worker.proc.poll() is None, self.worker.output[-3000:]
        assert "crashed" not in self.worker.output, self.worker.output[-5000:]
        assert "Traceback" not in self.worker.output, self.worker.output[-5000:]


def _runnable(body: bytes) -> str | None:
    """The task id of a body the worker will run (a valid envelope of a task it knows)."""
    try:
        message = decode(body)
    except DecodeError:
        return None
    return message.id if message.task in basic.app.tasks and len(body) <= 1024 * 1024 else None


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    server = RedisServer(bundled_binary()).start()
    env = {
        "PATH": "/usr/bin:/bin",
        "GREENQ_BROKER_URL": server.url,
        "GREENQ_WORKER_CPU_WORKERS": "0",
        "GREENQ_DEAD_LETTER_MAX": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(["-A", "tests.apps.basic", "-l", "INFO", "-Q", QUEUE, "-c", "4"], env)
    producer = GreenQ("fuzz", broker=server.url)
    try:
        worker.wait_for("worker ready")
        yield Harness(redis.Redis.from_url(server.url), worker, producer)
    finally:
        producer.close()
        worker.stop()
        server.stop()


def test_random_bytes_are_dead_lettered_and_the_worker_keeps_draining(harness: Harness) -> None:
    @WORKER
    @given(st.binary(max_size=300), st.sampled_from([0, 0, 5, 9]))
    def prop(body: bytes, band: int) -> None:
        harness.feed(body, band)

    prop()
    harness.assert_healthy()


def test_random_json_is_dead_lettered_and_the_worker_keeps_draining(harness: Harness) -> None:
    @WORKER
    @given(json_values)
    def prop(value: Any) -> None:
        harness.feed(json.dumps(value).encode())

    prop()
    harness.assert_healthy()


mutations = st.sampled_from(["drop", "retype", "replace"])
field_names = st.sampled_from(["v", "id", "task", "args", "kwargs", "queue", "priority", "eta", "expires"])
field_names |= st.sampled_from(["retries", "created", "u", "w", "headers", "sig"])


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope of ``add`` with one to three fields dropped, retyped or replaced."""
    task_id = new_id()
    value = envelope(ADD, task_id, (draw(st.integers()), draw(st.integers(-5, 5))))
    for _ in range(draw(st.integers(1, 3))):
        name, how = draw(field_names), draw(mutations)
        if how == "drop":
            value.pop(name, None)
        elif how == "retype":
            value[name] = draw(json_values)
        else:
            value[name] = draw(st.sampled_from([None, "", 0, -1, 99, 1e300, [], {}, "x" * 300, True]))
    return json.dumps(value).encode()


def test_mutated_envelopes_run_or_are_dead_lettered_and_the_worker_keeps_draining(harness: Harness) -> None:
    @WORKER
    @given(mutated_envelopes())
    def prop(body: bytes) -> None:
        harness.feed(body)

    prop()
    harness.assert_healthy()


def test_edge_inputs_are_dead_lettered_with_a_reason(harness: Harness) -> None:
    """Invalid UTF-8, NaN, deep nesting, unicode and NUL in task names, huge integers, 1 MiB."""
    base = envelope(ADD, "edge", (1, 2))
    deep = "[" * 100_000 + "]" * 100_000
    bodies = [
        b"\xff\xfe\xfd not utf-8 \xc3\x28",
        orjson.dumps(base)[:-1] + b',"eta":NaN}',
        json.dumps({**base, "id": new_id()}).replace('"args": [1, 2]', f'"args": [{deep}]').encode(),
        json.dumps({**base, "id": new_id(), "task": "t\u00e2sk.\U0001f525.\u0000"}).encode(),
        json.dumps({**base, "id": new_id(), "task": "x" * 100_000}).encode(),
        json.dumps({**base, "id": new_id(), "v": 10**40}).encode(),
        json.dumps({**base, "id": new_id(), "retries": 1e300}).encode(),  # no result could record it
        b'{"v":1,"id":"dup","id":"dup2","task":"nope","args":[],"kwargs":{}}',
    ]
    for body in bodies:
        harness.feed(body, random.choice([0, 9]))
    # A huge integer argument reaches the task as a float (orjson reads past 64 bits so); it runs.
    big = json.dumps({**base, "id": new_id(), "args": [10**30, 1]}).encode()
    harness.feed(big)
    harness.assert_healthy()
