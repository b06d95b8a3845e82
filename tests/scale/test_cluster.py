"""Redis Cluster (``redis+cluster://``), three masters started by the test: producers, workers,
results, ETA, recovery of a killed worker, a sharded queue, the order of a flush's per-slot
transactions, and a master killed mid-drain with its replica taking over (docs/scaling.md)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import redis

from greenq import BrokerError, BrokerUnavailable, GreenQ, chord, group
from greenq.broker.keys import GROUP, Keys
from greenq.broker.stack import Link
from tests.scale import scale_app
from tests.scale.servers import Cluster, greenq_status, until

QUEUES = [f"c{i}" for i in range(6)]


def _counts(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(key).items()}


def test_ten_thousand_tasks_over_six_queues_and_a_sharded_one_with_eta_and_recovery(
    cluster: Cluster, producer, start_worker, redis_url: str, r: redis.Redis
) -> None:
    app = producer(cluster.url)
    app.override({"queue_shards": {"hot": 4}}, "test")
    env = {"COUNTER_URL": redis_url, "GREENQ_QUEUE_SHARDS": '{"hot": 4}'}
    queues = ",".join([*QUEUES, "hot"])
    args = ("-P", "gevent", "-c", "50", "-Q", queues, "--lost-timeout", "2")
    victim = start_worker(*args, app="tests.scale.scale_app", url=cluster.url, env=env)
    late = [scale_app.late.apply_async(("late", 0.05), queue=QUEUES[i % 6]) for i in range(300)]
    until(lambda: len(r.hgetall("done:late")) >= 30, what="late-ack tasks to be running")
    victim.signal(signal.SIGKILL)  # its reserved and running late-ack messages must be recovered
    victim.wait(10)
    # Early-ack tasks go in after the kill: one running on the victim at the kill would be lost,
    # as docs/semantics.md says (at most once), and this test counts every one of them.
    early = [r for q in [*QUEUES, "hot"] for r in scale_app.early.map([("early",)] * 1400, queue=q)]
    due = time.time() + 1.0
    eta = [scale_app.stamp.apply_async(("eta",), queue=QUEUES[i % 6], eta=due) for i in range(20)]
    start_worker(*args, app="tests.scale.scale_app", url=cluster.url, env=env)
    assert [result.get(timeout=120) for result in late + early] == [x.id for x in late + early]
    assert all(result.get(timeout=60) >= due - 0.002 for result in eta)  # not before its time (ms)
    runs_early, done_late = _counts(r, "runs:early"), _counts(r, "done:late")
    assert len(early) == 9800 and set(runs_early) == {x.id for x in early}
    assert set(done_late) == {x.id for x in late}  # nothing lost with the killed worker
    nodes = cluster.client()
    # A late ack follows its result in a MULTI of its own (acks last): the streams empty just after.
    streams = [Keys.stream(q) for q in [*QUEUES, *(f"hot#{i}" for i in range(4))]]
    until(lambda: all(nodes.xlen(stream) == 0 for stream in streams), what="the last acks")
    assert {nodes.keyslot(Keys.stream(f"hot#{i}")) for i in range(4)} != {nodes.keyslot(Keys.stream("hot"))}
    status = greenq_status(cluster.url, GREENQ_QUEUE_SHARDS='{"hot": 4}')
    rows = {q["name"]: q for q in status["queues"]}
    assert rows["hot"]["shards"] == 4 and all(rows[q]["ready"] == 0 for q in QUEUES)
    assert scale_app.touch.apply_async(("touched",), queue="c0").get(timeout=30) == 1  # app.redis
    # Workflows and retries: a chord's count and body, a retry with the ack of its old message
    members = group(scale_app.early.s("chord").set(queue=q) for q in QUEUES)
    assert chord(members, scale_app.collect.s().set(queue="c2")).apply_async().get(timeout=30) == 6
    retried = scale_app.where.apply_async(("retry", True), queue="c4")
    assert retried.get(timeout=30) == "c4" and r.llen("order:retry") == 2


def test_a_flush_writes_results_before_acks_one_multi_per_slot(cluster: Cluster) -> None:
    """The late-ack flush as a worker sends it: when a slot's transaction fails, the ack (last,
    with the retry of its message) is not written: the message stays pending."""
    app = GreenQ("order", broker=cluster.url)
    channel = app.broker.channel()
    app.send_task("t.x", [1], queue="c0")
    (delivery,), _ = channel.reserve(["c0"], "w1", 10, 0)
    link: Link = channel.link
    broken = ("XADD", "greenq:{q:c3}:stream")  # refused when queued: that slot's MULTI aborts
    results = ("EVAL", _script("store_results"), 2, Keys.result("a"), Keys.result("b"), 1000, "ra", "rb")
    acks = [("XACK", delivery.stream, GROUP, delivery.entry_id), ("XDEL", delivery.stream, delivery.entry_id)]
    with pytest.raises(BrokerError):
        link.transaction([*acks, results, broken])
    nodes = cluster.client()
    assert nodes.xpending(delivery.stream, GROUP)["pending"] == 1  # not acked: the ack comes last
    assert nodes.exists(Keys.result("a"), Keys.result("b")) == 2  # the results, in their own slots
    link.transaction([*acks, results])
    assert nodes.xpending(delivery.stream, GROUP)["pending"] == 0


def _get(result: Any) -> Any:
    """``get()`` as a caller does during a failover: BrokerUnavailable until a replica took over."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return result.get(timeout=max(1.0, deadline - time.monotonic()))
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _script(name: str) -> str:
    from greenq.broker.stack import script

    return script(name)


def test_a_master_killed_mid_drain_its_replica_takes_over_nothing_lost(
    cluster_with_replicas: Cluster, producer, start_worker, redis_url: str, r: redis.Redis
) -> None:
    cluster = cluster_with_replicas
    producer(cluster.url)
    results = [x for q in QUEUES for x in scale_app.late.map([("kill", 0.02)] * 300, queue=q)]
    cluster.wait_replicated()  # what the producer was told is written is on the replicas too
    env = {"COUNTER_URL": redis_url}
    args = ("-P", "gevent", "-c", "50", "-Q", ",".join(QUEUES))
    worker = start_worker(*args, app="tests.scale.scale_app", url=cluster.url, env=env)
    until(lambda: len(r.hgetall("done:kill")) >= 300, what="the drain to be under way")
    victim = cluster.master_of(Keys.stream("c1"))
    cluster.kill(victim)
    assert [_get(x) for x in results] == [x.id for x in results]
    runs = _counts(r, "runs:kill")
    assert set(_counts(r, "done:kill")) == {x.id for x in results}  # nothing lost
    again = sum(n - 1 for n in runs.values())
    assert again <= 1800, again
    assert worker.proc.poll() is None
    assert "unavailable" in worker.output and "broker is back" in worker.output  # it saw the kill
    print(f"cluster master {victim} killed mid-drain: 0 lost, {again} ran again")
