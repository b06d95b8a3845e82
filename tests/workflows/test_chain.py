"""Chains, links and errbacks with real workers: each next step is enqueued by the worker that
finished the one before; a failing step stops the chain and runs link_error once."""

from __future__ import annotations

import json

import pytest
import redis

from greenq import TaskError, chain, group, signature
from greenq.broker.keys import Keys
from greenq.workflow import UnsupportedCanvas


def test_a_three_step_chain_passes_each_result_on(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import add, mul

    worker("-c", "4")
    result = chain(add.s(1, 2), mul.s(10), add.s(5))()
    assert result.get(timeout=20) == 35
    assert result.parent.get(timeout=5) == 30 and result.parent.parent.get(timeout=5) == 3
    # restored from Redis alone: each step names its parent and its child
    first = capp.AsyncResult(result.parent.parent.id)
    assert [c.id for c in first.children] == [result.parent.id]
    assert capp.AsyncResult(result.id).parent.id == result.parent.id
    assert (add.s(1, 1) | mul.s(3) | mul.si(2, 2))().get(timeout=20) == 4  # si ignores the parent


def test_only_the_first_step_is_sent_by_the_producer(capp, r: redis.Redis) -> None:
    from tests.apps.canvas_app import add, mul

    result = chain(add.s(1, 2), mul.s(10)).apply_async()
    (entry,) = r.xrange(Keys.stream("default"))
    envelope = json.loads(entry[1][b"m"])
    assert envelope["task"].endswith(".add") and envelope["args"] == [1, 2]
    assert [step["options"]["task_id"] for step in envelope["w"]["c"]] == [result.id]


def test_a_failing_step_stops_the_chain_marks_the_rest_and_runs_link_error_once(
    capp, worker, r: redis.Redis
) -> None:
    from tests.apps.canvas_app import add, boom, on_error

    worker("-c", "4")
    result = chain(add.s(1, 1), boom.s(), add.s(1), add.s(2)).apply_async(link_error=on_error.s())
    with pytest.raises(TaskError) as caught:
        result.get(timeout=20)
    assert caught.value.exc_type == "ValueError" and "not run" in str(caught.value)
    failed = result.parent.parent
    assert failed.state == "FAILURE" and "boom 2" in str(failed.result)
    assert result.parent.state == "FAILURE"  # the step after it did not run either
    assert r.blpop("errbacks", timeout=10)[1].decode() == f"{failed.id}|ValueError|boom 2"
    assert r.llen("errbacks") == 0 and r.get("body-runs") is None


def test_link_runs_with_the_result_and_is_listed_as_a_child(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import add, remember

    worker("-c", "4")
    result = add.s(2, 3).apply_async(link=remember.s())
    assert result.get(timeout=20) == 5
    assert r.blpop("linked", timeout=10)[1] == b"5"
    assert len(result.children) == 1
    direct = add.apply_async((4, 4), link=remember.s())
    assert direct.get(timeout=20) == 8 and r.blpop("linked", timeout=10)[1] == b"8"


def test_a_group_inside_a_chain_is_a_chord_and_chunks_run_in_one_task_each(capp, worker) -> None:
    from tests.apps.canvas_app import add, mul, xsum

    worker("-c", "8")
    assert chain(add.s(1, 1), group(mul.s(2), mul.s(3)), xsum.s())().get(timeout=20) == 10
    assert group(chain(add.s(1, 1), mul.s(2)), add.s(3, 3))().get(timeout=20) == [4, 6]
    chunked = add.chunks([(i, i) for i in range(10)], 3)()
    assert chunked.get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
    assert len(chunked.results) == 4


def test_a_signature_tree_survives_json_and_unsupported_shapes_fail_at_build(capp, worker) -> None:
    from tests.apps.canvas_app import add, mul

    worker("-c", "4")
    tree = chain(add.s(1, 2), group(mul.s(2), mul.s(3)), add.si(0, 7)).to_dict()
    rebuilt = signature(json.loads(json.dumps(tree)), app=capp)
    assert rebuilt.apply_async().get(timeout=20) == 7
    with pytest.raises(UnsupportedCanvas, match="group inside a group"):
        group(group(add.s(1, 1)), add.s(2, 2))
    with pytest.raises(UnsupportedCanvas, match="empty chain"):
        chain()


def test_each_next_step_keeps_the_first_steps_headers(capp, worker) -> None:
    """Headers (the trace context, a request id) set when the chain was sent reach every step,
    also those the worker starts."""
    from greenq.signals import before_task_publish
    from tests.apps.canvas_app import add, request_header

    def tag(headers: dict, **_: object) -> None:
        headers.setdefault("request_id", "req-42")

    worker("-c", "4")
    before_task_publish.connect(tag)
    try:
        result = chain(add.s(1, 1), request_header.s(), request_header.s())()
    finally:
        before_task_publish.disconnect(tag)
    assert result.get(timeout=20) == "req-42" and result.parent.get(timeout=5) == "req-42"
