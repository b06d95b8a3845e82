"""Chords with real workers: the body runs exactly once, after every member, with the results
in member order — also when a member is retried, when a worker holding members is SIGKILLed
(late ack), and when two workers race on the last members. A failed member fails the chord."""

from __future__ import annotations

import signal

import pytest
import redis

from greenq import TaskError, chord, group
from greenq.broker.keys import Keys

N = 500


def _runs(r: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall("tsum-runs").items()}


def test_a_chord_of_500_runs_its_body_once_with_every_result_in_member_order(
    capp, worker, r: redis.Redis
) -> None:
    from tests.apps.canvas_app import ident, tsum

    worker("-c", "50")
    result = chord(ident.s(i) for i in range(N))(tsum.s())
    assert result.get(timeout=60) == sum(range(N))
    assert _runs(r) == {result.id: 1}
    header = result.parent
    assert header.get(timeout=5) == list(range(N))  # the header's GroupResult, in member order
    # the body gets the results in member order, not in finishing order
    ordered = chord([ident.s([i]) for i in range(20)], ident.s())()
    assert ordered.get(timeout=30) == [[i] for i in range(20)]
    key = Keys.chord("default", header.id)
    assert 0 < r.pttl(key) <= capp.conf.result_expires * 1000  # the chord's state expires


def test_a_member_retried_counts_once(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import flaky, tsum

    worker("-c", "50")
    result = chord(flaky.s(i, "retry") for i in range(N))(tsum.s())
    assert result.get(timeout=60) == sum(range(N))
    assert _runs(r) == {result.id: 1}
    assert all(int(v) == 2 for v in r.hgetall("flaky:retry").values())  # each failed once first


def test_a_worker_killed_mid_chord_is_recovered_and_the_body_still_runs_once(
    capp, worker, r: redis.Redis
) -> None:
    from tests.apps.canvas_app import slow_late, tsum

    flags = ("-c", "50", "--lost-timeout", "3")
    victim = worker(*flags)
    result = chord(slow_late.s(i, 0.02 if i >= 50 else 30.0) for i in range(N))(tsum.s())
    # the victim runs the first 50 (30 s each, late ack) and holds more reserved
    for _ in range(50):
        assert r.blpop("slow-started", timeout=30) is not None
    victim.signal(signal.SIGKILL)
    victim.wait()
    rescuer = worker(*flags)
    # the 50 killed members are recovered and run again (at once: they sleep on a first run only)
    assert result.get(timeout=120) == sum(range(N))
    assert _runs(r) == {result.id: 1}
    runs = {k.decode(): int(v) for k, v in r.hgetall("slow-runs").items()}
    assert len(runs) == N and any(v == 2 for v in runs.values())  # some ran again, counted once
    assert "recovered" in rescuer.output


def test_two_workers_racing_on_the_last_members_run_the_body_once(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import ident, tsum

    worker("-c", "20")
    worker("-c", "20")
    results = [chord(ident.s(i) for i in range(50))(tsum.s()) for _ in range(10)]
    assert [res.get(timeout=60) for res in results] == [sum(range(50))] * 10
    assert _runs(r) == {res.id: 1 for res in results}


def test_a_failing_member_runs_link_error_once_and_never_the_body(capp, worker, r: redis.Redis) -> None:
    from tests.apps.canvas_app import boom, ident, on_error, tsum

    worker("-c", "20")
    members = [ident.s(i) for i in range(100)]
    members[37] = boom.s(37)
    result = chord(members, tsum.s()).apply_async(link_error=on_error.s())
    with pytest.raises(TaskError) as caught:
        result.get(timeout=30)
    assert caught.value.exc_type == "ChordError"
    failed_id = result.parent.results[37].id
    assert failed_id in str(caught.value) and "boom 37" in str(caught.value)
    assert r.blpop("errbacks", timeout=10)[1].decode() == f"{failed_id}|ValueError|boom 37"
    assert result.parent.get(timeout=30, propagate=False)[36] == 36  # the others still ran
    assert r.llen("errbacks") == 0 and _runs(r) == {}


def test_an_empty_header_runs_the_body_at_once_and_a_chord_body_may_be_a_chain(capp, worker) -> None:
    from tests.apps.canvas_app import add, ident, xsum

    worker("-c", "8")
    assert chord([], xsum.s())().get(timeout=20) == 0
    body = xsum.s() | add.s(100)
    assert chord([ident.s(1), ident.s(2)], body)().get(timeout=20) == 103
    assert chord(group(ident.s(i) for i in range(3)), xsum.s(extra=10))().get(timeout=20) == 13


def test_every_workflow_key_expires(capp, worker, r: redis.Redis) -> None:
    """Nothing a workflow writes outlives ``result_expires``: only the queues' own structures
    (streams, the queue set, the worker registry, events) are left without a TTL."""
    from tests.apps.canvas_app import add, boom, ident, on_error, xsum

    worker("-c", "8")
    chord([ident.s(i) for i in range(5)], xsum.s() | add.s(1))().get(timeout=20)
    with pytest.raises(TaskError):
        chord([boom.s(), ident.s(1)], xsum.s()).apply_async(link_error=on_error.s()).get(timeout=20)
    assert r.blpop("errbacks", timeout=10) is not None
    structural = (b"greenq:{q:", b"greenq:queues", b"greenq:workers", b"greenq:events", b"errbacks", b"body-")
    for key in r.keys("*"):
        if key.startswith(b"greenq:{q:") and b":chord:" in key:
            assert r.pttl(key) > 0, key
        elif not key.startswith(structural):
            assert r.pttl(key) > 0, f"{key!r} has no TTL"
    assert r.keys("greenq:{q:default}:chord:*")  # the check above did see chord states
