"""Canvas, producer side (greenq.canvas): signatures as plain JSON, group and GroupResult, on a
real Redis and real workers. Chains and chords: tests/workflows/."""

from __future__ import annotations

import json

import pytest
import redis

import greenq
from greenq import GreenQ, GroupResult, Signature, TaskError, group, signature
from greenq.broker.keys import Keys


def _messages(r: redis.Redis, key: str) -> list[dict]:
    return [json.loads(fields[b"m"]) for _, fields in r.xrange(key)]


def test_the_public_names_are_exported() -> None:
    assert greenq.group is group and greenq.signature is signature
    assert greenq.Signature is Signature and greenq.GroupResult is GroupResult


def test_a_signature_survives_a_json_round_trip_and_keeps_its_options(app, r: redis.Redis) -> None:
    from tests.apps.basic import add

    sig = add.s(2, b=3).set(queue="math", priority=7, countdown=None)
    wire = json.dumps(sig.to_dict())
    data = json.loads(wire)
    assert data == {
        "task": "tests.apps.basic.add",
        "args": [2],
        "kwargs": {"b": 3},
        "options": {"queue": "math", "priority": 7, "countdown": None},
        "immutable": False,
        "subtask_type": None,
    }
    again = signature(data, app=app)
    assert again == sig and again is not sig
    assert add.s(1, 2).to_dict()["options"] == {}  # set() returned a copy, not the original
    result = again.delay()
    (message,) = _messages(r, Keys.stream("math", 7))  # the band stream of priority 7 of "math"
    assert message["id"] == result.id and message["args"] == [2] and message["kwargs"] == {"b": 3}
    assert r.xlen(Keys.stream("default")) == 0 and r.xlen(Keys.stream("math")) == 0
    immutable = signature(json.loads(json.dumps(add.si(1, 2).to_dict())), app=app)
    assert immutable.immutable and immutable.to_dict()["immutable"] is True


def test_a_signature_without_an_app_or_with_a_bad_option_says_so(app) -> None:
    from tests.apps.basic import add

    with pytest.raises(greenq.GreenqError, match="has no app"):
        signature(add.s(1, 2).to_dict()).delay()
    with pytest.raises(TypeError, match="unknown option 'queu'"):
        add.s(1, 2).set(queu="math")
    with pytest.raises(TypeError, match="link= takes signatures"):
        add.s(1, 2).apply_async(link=print)


def test_partial_arguments_go_first_for_mutable_and_are_ignored_for_immutable(app, r: redis.Redis) -> None:
    """Celery's rule: ``sig.delay(x)`` runs ``task(x, *sig.args)``; ``si`` ignores ``x``."""
    from tests.apps.basic import add

    add.s(2).delay(3)
    add.si(2, 3).delay(100)
    add.signature((5,), {}, queue="default").apply_async((6,))
    first, second, third = _messages(r, Keys.stream("default"))
    assert first["args"] == [3, 2]
    assert second["args"] == [2, 3]
    assert third["args"] == [6, 5]


def test_signatures_run_in_a_real_worker(app, start_worker) -> None:
    from tests.apps.basic import add

    start_worker("-c", "4")
    assert add.s(2, 3).delay().get(timeout=20) == 5
    assert add.si(2, 3).delay(100).get(timeout=20) == 5
    assert add.s(2).delay(3).get(timeout=20) == 5
    assert add.s(2, 3)() == 5  # calling a signature runs it here, as in Celery


def test_a_group_of_1000_is_one_batch_and_returns_results_in_member_order(
    app, r: redis.Redis, redis_url: str, start_worker
) -> None:
    from tests.apps.basic import add

    calls = 0
    real_execute = app.broker.conns.execute

    def counting(commands):
        nonlocal calls
        calls += 1
        return real_execute(commands)

    app.broker.conns.execute = counting
    result = group(add.s(i, i) for i in range(1000)).apply_async()
    app.broker.conns.execute = real_execute
    assert calls == 1  # members and the member list: one pipelined round trip
    assert r.xlen(Keys.stream("default")) == 1000  # all there before any worker runs
    assert r.lrange(Keys.group(result.id), 0, -1) == [res.id.encode() for res in result.results]
    assert 0 < r.pttl(Keys.group(result.id)) <= app.conf.result_expires * 1000
    assert [m["id"] for m in _messages(r, Keys.stream("default"))] == [res.id for res in result.results]
    assert not result.ready() and result.completed_count() == 0

    start_worker("-c", "50")
    assert result.get(timeout=60) == [2 * i for i in range(1000)]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 1000

    other = GreenQ("elsewhere", broker=redis_url)  # another process's app: no task registered
    restored = GroupResult.restore(result.id, app=other)
    assert restored is not None and restored.id == result.id
    assert [res.id for res in restored.results] == [res.id for res in result.results]
    assert restored.get(timeout=5)[:3] == [0, 2, 4]
    assert GroupResult.restore("no-such-group", app=other) is None
    other.close()


def test_starmap_and_a_group_rebuilt_from_json(app, start_worker) -> None:
    from tests.apps.basic import add

    start_worker("-c", "4")
    assert add.starmap([(1, 1), (2, 2)])().get(timeout=20) == [2, 4]
    data = json.loads(json.dumps(group([add.s(2), add.si(3, 4)]).to_dict()))
    assert data["subtask_type"] == "group" and len(data["kwargs"]["tasks"]) == 2
    rebuilt = signature(data, app=app)
    assert isinstance(rebuilt, group)
    assert rebuilt.delay(10).get(timeout=20) == [12, 7]  # partial args reach the mutable member


def test_a_group_with_a_failing_member_fails_and_get_raises_its_error(app, start_worker) -> None:
    from tests.apps.basic import add, fail

    start_worker("-c", "4")
    result = group(add.s(1, 2), fail.s("member two broke"), add.s(3, 4)).delay()
    with pytest.raises(TaskError) as info:
        result.get(timeout=20)
    assert info.value.task_id == result.results[1].id
    assert info.value.exc_type == "ValueError" and info.value.exc_message == "member two broke"
    assert result.ready() and result.failed() and not result.successful()
    assert result.completed_count() == 2
    values = result.get(timeout=5, propagate=False)
    assert values[0] == 3 and values[2] == 7 and isinstance(values[1], TaskError)


def test_a_bad_member_sends_nothing(app, r: redis.Redis) -> None:
    from tests.apps.basic import add

    with pytest.raises(TypeError):
        group(add.s(1, 2), add.s(1, 2, 3)).delay()
    assert r.xlen(Keys.stream("default")) == 0 and not r.keys("greenq:group:*")
    empty = group([]).delay()
    assert empty.results == [] and empty.get(timeout=1) == [] and empty.ready()
