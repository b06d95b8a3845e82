"""Progress (update_state, iter_updates, aiter_updates) and extended result records, with real
workers."""

from __future__ import annotations

import asyncio
import threading
import time

import redis

from greenq import AsyncResult


def _reader_blocked(r: redis.Redis) -> None:
    """Wait until a client is blocked in XREAD (the reader under test), bounded."""
    deadline = time.monotonic() + 20
    while not any(c["cmd"] == "xread" and "b" in c["flags"] for c in r.client_list()):
        assert time.monotonic() < deadline, "the reader never blocked"
        time.sleep(0.01)


def test_progress_updates_arrive_in_order_at_a_reader_started_before_the_task(
    capp, worker, r: redis.Redis
) -> None:
    from tests.apps.canvas_app import progress

    worker("-c", "4")
    result = progress.delay(5, "gate-1")
    seen: list[tuple] = []
    reader = threading.Thread(
        target=lambda: seen.extend(
            (u["state"], u.get("meta", {}).get("done"), u.get("result"))
            for u in result.iter_updates(timeout=20)
        )
    )
    reader.start()
    _reader_blocked(r)
    r.rpush("gate-1", 1)  # the task waits for this: the reader is waiting already
    reader.join(30)
    assert seen == [("PROGRESS", i, None) for i in range(1, 6)] + [("SUCCESS", None, 5)]
    assert result.state == "SUCCESS" and result.get(timeout=1) == 5


def test_state_and_info_show_the_latest_update_and_never_overwrite_a_final_state(
    capp, worker, r: redis.Redis
) -> None:
    from tests.apps.canvas_app import progress

    worker("-c", "4")
    result = progress.delay(3, "gate-2")
    r.rpush("gate-2", 1)
    assert result.get(timeout=20) == 3
    assert not progress.update_state(task_id=result.id, state="PROGRESS", meta={"done": 99})
    assert result.state == "SUCCESS"
    other = AsyncResult("not-started-yet", app=capp)
    assert progress.update_state(task_id=other.id, state="PROGRESS", meta={"done": 1, "total": 2})
    assert other.state == "PROGRESS" and other.info == {"done": 1, "total": 2}


def test_aiter_updates_yields_the_same_records(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import progress

    worker("-c", "4")
    result = progress.delay(3, "gate-3")

    async def read() -> list[str]:
        async def collect() -> list[str]:
            return [update["state"] async for update in result.aiter_updates(timeout=20)]

        reading = asyncio.create_task(collect())
        await asyncio.get_running_loop().run_in_executor(None, _reader_blocked, r)
        r.rpush("gate-3", 1)
        seen = await reading
        await capp.aclose()
        return seen

    assert asyncio.run(read()) == ["PROGRESS"] * 3 + ["SUCCESS"]


def test_result_extended_records_name_arguments_queue_and_times(capp, worker) -> None:
    from tests.apps.canvas_app import add

    worker("-c", "4", env={"GREENQ_RESULT_EXTENDED": "true"})
    worker("-c", "4", "-Q", "plain")  # without the setting
    result = add.apply_async((2, 3), queue="default")
    assert result.get(timeout=20) == 5
    assert (result.name, result.args, result.kwargs, result.queue) == (add.name, [2, 3], {}, "default")
    assert result.retries == 0 and result.worker
    assert result.date_started <= result.date_done
    plain = add.apply_async((1, 1), queue="plain")
    assert plain.get(timeout=20) == 2 and plain.name == add.name
    assert plain.args is None and plain.queue is None  # arguments may hold user data: off by default
