"""The asyncio producer (greenq.aio on redis.asyncio) against a real Redis and a real worker:
exactly-once for gathered ``adelay``, ``aget``, the same layout and errors as the sync producer,
an event loop that keeps ticking, and no gevent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from greenq import BrokerUnavailable, ConfigError, EncodeError, GreenQ, ResultTimeout, TaskError
from greenq.broker.keys import Keys
from greenq.embedded import free_port
from greenq.results import PENDING
from tests.apps import basic

ROOT = Path(__file__).resolve().parents[2]


async def _with_lag_probe(work: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """Run ``work`` beside a ticker that yields to the loop after each tick; returns its result
    (or the exception it raised) and how many ticks ran while it did: a call that blocked the
    event loop for its whole length lets none run. (Counted, not timed: the machine is shared.)"""
    stop = asyncio.Event()
    ticks = 0
    started = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await started.wait()  # the ticker is running before the work starts
    ticks = 0
    try:
        outcome = await work()
    except Exception as exc:
        outcome = exc
    stop.set()
    await ticker
    return outcome, ticks


def test_a_thousand_gathered_adelay_calls_each_run_once(app: GreenQ, r: redis.Redis, start_worker) -> None:
    start_worker("-c", "100")

    async def main() -> tuple[list[Any], list[Any]]:
        results = await asyncio.gather(*(basic.count_run.adelay("gathered") for _ in range(1000)))
        values = [await result.aget(timeout=60) for result in results]
        await app.aclose()
        return results, values

    results, values = asyncio.run(main())
    ids = [result.id for result in results]
    assert len(set(ids)) == 1000 and values == ids
    assert r.hgetall("runs:gathered") == {task_id.encode(): b"1" for task_id in ids}


def test_aget_returns_results_and_raises_task_errors(app: GreenQ, start_worker) -> None:
    start_worker()

    async def main() -> None:
        assert await (await basic.add.adelay(2, 3)).aget(timeout=20) == 5
        assert await (await basic.add.aapply_async((4, 5), priority=9)).aget(timeout=20) == 9
        named = await app.asend_task("tests.apps.basic.add", [1, 1])
        assert await named.aget(timeout=20) == 2
        failed = await basic.fail.adelay("kaboom")
        with pytest.raises(TaskError, match="ValueError: kaboom") as caught:
            await failed.aget(timeout=20)
        assert caught.value.task_id == failed.id and "raise ValueError" in (caught.value.traceback or "")
        returned = await failed.aget(timeout=1, propagate=False)
        assert isinstance(returned, TaskError) and returned.exc_type == "ValueError"
        mapped = await basic.add.amap([(i, i) for i in range(20)])
        assert [await m.aget(timeout=20) for m in mapped] == [2 * i for i in range(20)]
        await app.aclose()

    asyncio.run(main())


def test_aget_raises_result_timeout_on_time_without_blocking_the_loop(app: GreenQ, r: redis.Redis) -> None:
    async def main() -> None:
        result = await basic.add.adelay(1, 2)  # no worker: it never finishes
        r.config_resetstat()
        started = time.monotonic()
        error, lag = await _with_lag_probe(lambda: result.aget(timeout=0.5))
        elapsed = time.monotonic() - started
        assert r.info("commandstats")["cmdstat_xread"]["calls"] == 1  # one XREAD BLOCK, no polling
        assert isinstance(error, ResultTimeout) and isinstance(error, TimeoutError)
        assert str(error) == f"task {result.id} not ready after 0.5s"
        assert 0.5 <= elapsed < 1.5, elapsed
        assert lag >= 10, f"the loop ran only {lag} times while waiting 0.5 s for a result"
        # asyncio's own timeout cancels a wait that has none; the transport stays usable.
        cancelled, _ = await _with_lag_probe(lambda: asyncio.wait_for(result.aget(), 0.3))
        assert isinstance(cancelled, TimeoutError) and not isinstance(cancelled, ResultTimeout)
        again = await basic.add.adelay(1, 1)
        with pytest.raises(ResultTimeout):
            await again.aget(timeout=0.1)
        await app.aclose()

    asyncio.run(main())
    assert r.xlen(Keys.stream("default")) == 2


def test_the_loop_keeps_ticking_while_enqueueing(app: GreenQ, r: redis.Redis) -> None:
    async def main() -> tuple[float, float, float]:
        await basic.add.adelay(0, 0)  # connect first: the lag of a TCP connect is not the point

        async def one_by_one() -> None:
            for i in range(2000):
                await basic.add.adelay(i, i)

        _, sequential = await _with_lag_probe(one_by_one)
        _, gathered = await _with_lag_probe(
            lambda: asyncio.gather(*(basic.add.adelay(i, i) for i in range(1000)))
        )
        _, batch = await _with_lag_probe(lambda: basic.add.amap([(i, i) for i in range(10_000)]))
        await app.aclose()
        return sequential, gathered, batch

    sequential, gathered, batch = asyncio.run(main())
    assert r.xlen(Keys.stream("default")) == 13_001
    # The loop runs other coroutines during every round trip: at least once per adelay() and per
    # amap() pipeline chunk (5,000 messages). A blocking producer (delay(), map()) lets none run.
    assert sequential >= 2000, f"the loop ran {sequential} times during 2,000 sequential adelay()"
    assert gathered >= 1, f"the loop ran {gathered} times during 1,000 gathered adelay()"
    assert batch >= 2, f"the loop ran {batch} times during amap() of 10,000 (2 round trips)"


def _layout(r: redis.Redis) -> dict[str, Any]:
    """Every key's type and content, with per-call times removed, for comparing producers."""
    out: dict[str, Any] = {}
    for key in sorted(k.decode() for k in r.keys("*")):
        kind = r.type(key).decode()
        if kind == "stream":
            out[key] = [_envelope(fields) for _, fields in r.xrange(key)]
        elif kind == "zset":
            out[key] = [member.split(b"|", 1)[0].decode() for member in r.zrange(key, 0, -1)]
            out[key] += [json.loads(member.split(b"|", 1)[1])["id"] for member in r.zrange(key, 0, -1)]
        elif kind == "set":
            out[key] = sorted(r.smembers(key))
        else:
            out[key] = kind
    return out


def _envelope(fields: dict[bytes, bytes]) -> dict[str, Any]:
    assert list(fields) == [b"m"]
    envelope = json.loads(fields[b"m"])
    envelope.pop("created")
    return envelope


def test_both_producers_write_the_same_keys_and_envelopes(app: GreenQ, r: redis.Redis) -> None:
    app.config_from_object({"task_routes": {"tests.apps.basic.sleepy": {"queue": "slow"}}})
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("tests.apps.basic.add", (1, 2), {"task_id": "a" * 32}),
        ("tests.apps.basic.add", (3, 4), {"task_id": "b" * 32, "priority": 7}),
        ("tests.apps.basic.add", (5, 6), {"task_id": "c" * 32, "countdown": 3600, "priority": 2}),
        ("tests.apps.basic.sleepy", (0.1,), {"task_id": "d" * 32}),
        ("not.registered.here", ([1], {"k": "v"}), {"task_id": "e" * 32, "queue": "other"}),
    ]
    for name, args, options in calls:
        app.send_task(name, args, **options)
    sync_layout = _layout(r)
    r.flushall()

    async def main() -> None:
        for name, args, options in calls:
            await app.asend_task(name, args, **options)
        await app.aclose()

    asyncio.run(main())
    async_layout = _layout(r)
    for layout in (sync_layout, async_layout):  # what the layout holds, to keep this test honest
        assert layout[Keys.stream("default", 7)][0]["id"] == "b" * 32
        assert layout[Keys.delayed("default")] == ["2", "c" * 32]
        assert layout[Keys.stream("slow")][0]["task"] == "tests.apps.basic.sleepy"
    for envelopes in (v for k, v in async_layout.items() if k.endswith("stream")):
        for envelope in envelopes:
            envelope.pop("eta")
    for envelopes in (v for k, v in sync_layout.items() if k.endswith("stream")):
        for envelope in envelopes:
            envelope.pop("eta")
    assert async_layout == sync_layout


def test_the_same_errors_as_the_sync_producer(app: GreenQ, r: redis.Redis) -> None:
    down = GreenQ("down", broker_connect_timeout=1)
    down.override({"broker_url": f"redis://:hunter2@127.0.0.1:{free_port()}/0"})  # beats GREENQ_BROKER_URL

    @down.task
    def job(x: int) -> int:
        return x

    with pytest.raises(BrokerUnavailable) as sync_error:
        job.delay(1)

    async def main() -> None:
        with pytest.raises(BrokerUnavailable) as async_error:
            await job.adelay(1)
        prefix = f"broker redis://:***@127.0.0.1:{down.broker.url.rsplit(':', 1)[1]} unavailable: "
        assert str(sync_error.value).startswith(prefix) and str(async_error.value).startswith(prefix)
        assert "hunter2" not in str(async_error.value)
        with pytest.raises(BrokerUnavailable):
            await down.AsyncResult("x" * 32).aget(timeout=1)
        await down.aclose()

        for bad_call, error, pattern in [
            (lambda: basic.add.adelay(object(), 1), EncodeError, r"args\[0\]: type object"),
            (lambda: basic.add.adelay(1), TypeError, "missing a required argument: 'b'"),
            (lambda: basic.add.aapply_async((1, 2), priority=10), ConfigError, "priority 10"),
            (lambda: basic.add.aapply_async((1, 2), queue="bad queue"), ConfigError, "invalid queue name"),
            (lambda: basic.add.aapply_async((1, 2), countdown=1, eta=2), ValueError, "countdown or eta"),
            (lambda: app.asend_task("x", ["y" * 2_000_000]), EncodeError, "over max_message_bytes"),
        ]:
            with pytest.raises(error, match=pattern):
                await bad_call()
        await app.aclose()

    asyncio.run(main())
    assert r.keys("greenq:*") == []  # nothing invalid was sent


def test_aenqueue_many_validates_everything_before_sending(app: GreenQ, r: redis.Redis) -> None:
    async def main() -> list[Any]:
        calls = [(basic.add, (i, i), None) for i in range(600)] + [
            ("tests.apps.basic.add", (object(), 1), None)
        ]
        with pytest.raises(EncodeError):
            await app.aenqueue_many(calls)
        assert r.xlen(Keys.stream("default")) == 0
        results = await app.aenqueue_many([(basic.add, (i, i), None) for i in range(1200)], priority=3)
        await app.aclose()
        return results

    results = asyncio.run(main())
    assert r.xlen(Keys.stream("default", 3)) == 1200 and len({res.id for res in results}) == 1200


def test_a_call_cancelled_before_its_pipeline_is_sent_sends_nothing(app: GreenQ, r: redis.Redis) -> None:
    async def main() -> str:
        kept = asyncio.ensure_future(basic.add.adelay(1, 1))
        dropped = asyncio.ensure_future(basic.add.adelay(2, 2))
        await asyncio.sleep(0)  # both have queued their message; the pipeline goes next iteration
        dropped.cancel()
        result = await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped
        await app.aclose()
        return result.id

    kept_id = asyncio.run(main())
    entries = r.xrange(Keys.stream("default"))
    assert [json.loads(fields[b"m"])["id"] for _, fields in entries] == [kept_id]


def test_one_app_serves_several_event_loops(app: GreenQ, r: redis.Redis) -> None:
    async def send() -> str:
        return (await basic.add.adelay(1, 1)).id  # no aclose: the next loop must not reuse this one

    first, second = asyncio.run(send()), asyncio.run(send())
    assert first != second and r.xlen(Keys.stream("default")) == 2
    assert app.AsyncResult(first).state == PENDING


def test_the_async_producer_never_imports_gevent(redis_url: str) -> None:
    code = (
        "import asyncio, sys\n"
        "from greenq import GreenQ, ResultTimeout\n"
        f"app = GreenQ('p', broker={redis_url!r})\n"
        "@app.task\n"
        "def f(x): return x\n"
        "async def main():\n"
        "    r = await f.adelay(1)\n"
        "    await asyncio.gather(*(f.adelay(i) for i in range(100)))\n"
        "    await f.amap([(i,) for i in range(100)])\n"
        "    await app.asend_task('other.task', [1])\n"
        "    try:\n"
        "        await r.aget(timeout=0.1)\n"
        "    except ResultTimeout:\n"
        "        print('timeout')\n"
        "    await app.aclose()\n"
        "asyncio.run(main())\n"
        "print('gevent' in sys.modules, any(m.startswith('greenq.worker') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert out == ["timeout", "False", "False"]
