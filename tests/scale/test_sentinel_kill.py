"""Redis Sentinel, a real failover: the master SIGKILLed mid-drain while a producer keeps
enqueueing. The sentinels promote the replica; the worker and the producer carry on by
themselves, and what docs/scaling.md (Sentinel) says may be lost is the only thing that is.

Which enqueues must survive is measured, not guessed: after each enqueue the master took
before the kill, the producer asks ``WAIT 1`` on a connection of its own, whose write comes after
the enqueue's in the replication stream; if the replica acknowledged it, the replica (the new
master) has the enqueue. Enqueues sent after the kill can only have been taken by the new master.
What the old master acknowledged without a ``WAIT`` reply is the loss the doc allows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import redis

from greenq.broker.sentinel import connection_pool
from greenq.exceptions import BrokerUnavailable
from tests.scale import scale_app
from tests.scale.servers import SentinelGroup, until

TAG = "kill"
SLEEP_S = 0.05  # each task's run: 50 in flight on -c 50, so many are running when the master dies
STREAM = "greenq:{q:default}:stream"


class Feed(threading.Thread):
    """The producer: batches of late-ack tasks, from the sync and the asyncio API in turn, until
    ``stopping``; every call's outcome is recorded, nothing is retried for it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.killed = threading.Event()  # set once the old master is dead: later calls reach the new one
        self.stopping = threading.Event()
        self.confirmed: list[str] = []  # taken by the old master and replicated (WAIT said so)
        self.unconfirmed: list[str] = []  # taken by the old master; replication unknown
        self.after: list[str] = []  # sent after the kill and acknowledged: by the new master
        self.refused: list[str] = []  # BrokerUnavailable: the producer was told
        self.refused_at: list[float] = []  # when (time.monotonic()), for the report
        self.unexpected: list[str] = []  # any other error: a bug

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        marker = redis.Redis(
            connection_pool=connection_pool(
                redis.ConnectionPool, self.url, protocol=2, socket_timeout=5, socket_connect_timeout=5
            )
        )
        sync = lambda: [r.id for r in scale_app.late.map([(TAG, SLEEP_S)] * 10)]  # noqa: E731
        aio = lambda: [loop.run_until_complete(scale_app.late.adelay(TAG, SLEEP_S)).id]  # noqa: E731
        try:
            while not self.stopping.is_set():
                for send in (sync, aio):
                    self.call(send, marker)
                self.stopping.wait(0.01)
        finally:
            loop.run_until_complete(scale_app.app.aclose())
            loop.close()
            marker.close()

    def call(self, send: Callable[[], list[str]], marker: redis.Redis) -> None:
        after = self.killed.is_set()
        try:
            ids = send()
        except BrokerUnavailable as exc:
            self.refused.append(str(exc))
            self.refused_at.append(time.monotonic())
            self.stopping.wait(0.05)  # "retry yourself" (Celery's task_publish_retry is not greenq's)
            return
        except Exception as exc:
            self.unexpected.append(repr(exc))
            return
        if after:
            self.after.extend(ids)
        elif self.replicated(marker):
            self.confirmed.extend(ids)
        else:
            self.unconfirmed.extend(ids)

    def replicated(self, marker: redis.Redis) -> bool:
        """Has the replica everything the master took so far (this write comes after them)?"""
        if self.killed.is_set():
            return False
        try:
            pipe = marker.pipeline(transaction=False)
            pipe.set("greenq-test:marker", 1)
            pipe.execute_command("WAIT", 1, 2000)
            return int(pipe.execute()[1]) >= 1
        except redis.RedisError:
            return False


def test_master_killed_mid_drain_worker_and_producer_follow_and_only_unreplicated_enqueues_may_be_lost(
    sentinels: SentinelGroup, producer, start_worker, redis_url: str, r: redis.Redis
) -> None:
    producer(sentinels.url)
    env = {"COUNTER_URL": redis_url}
    worker = start_worker("-P", "gevent", "-c", "50", app="tests.scale.scale_app", url=sentinels.url, env=env)
    feed = Feed(sentinels.url)
    feed.start()
    until(lambda: r.hlen(f"done:{TAG}") >= 500, 60, "the drain to be under way")
    old = sentinels.master_port()
    backlog = redis.Redis(port=old).xlen(STREAM)  # not acked yet: waiting or running
    assert backlog > 0, "nothing in flight to kill the master under"
    sentinels.kill(old)  # SIGKILL: no shutdown, no last words to the replica
    feed.killed.set()
    new = sentinels.new_master(old)
    assert new == sentinels.ports["replica"] and new != old
    # The producer carries on by itself once the sentinels name the new master.
    until(lambda: len(feed.after) >= 300, 60, "the producer to enqueue on the new master")
    feed.stopping.set()
    feed.join(60)
    assert not feed.is_alive(), "the producer hung"
    assert not feed.unexpected, feed.unexpected[:5]
    assert feed.refused, "the outage never reached the producer as BrokerUnavailable"
    assert all("unavailable" in error for error in feed.refused)
    assert len(feed.confirmed) >= 100, "too few enqueues confirmed replicated to test anything"
    must_run = set(feed.confirmed) | set(feed.after)
    # The worker was not restarted: it runs everything that must run, the old master's share too.
    until(lambda: must_run <= {k.decode() for k in r.hkeys(f"done:{TAG}")}, 120, "every kept task to run")
    assert worker.proc.poll() is None, worker.output
    assert "broker is back" in worker.output

    # The old master comes back empty: the sentinels make it the new master's replica.
    assert redis.Redis(port=new).role()[0] == b"master"
    sentinels.node(old)
    restarted = time.monotonic()
    until(
        lambda: (
            redis.Redis(port=old).info("replication").get("master_link_status") == "up"
            and redis.Redis(port=old).info("replication")["master_port"] == new
        ),
        60,
        "the old master to rejoin as the new one's replica",
    )
    rejoin_s = time.monotonic() - restarted
    rejoined = scale_app.late.map([(TAG, 0.0)] * 50)
    check = redis.Redis(port=new).pipeline(transaction=False)  # a write after those, then WAIT for it
    check.set("greenq-test:marker", 2).execute_command("WAIT", 1, 10000)
    assert check.execute()[1] == 1, "the enqueues did not replicate to the old master"
    for result in rejoined:
        assert result.get(timeout=60) == result.id
    # What ran twice may still be running when every result is in: wait for the stream to empty.
    until(lambda: redis.Redis(port=new).xlen(STREAM) == 0, 60, "the stream to empty")

    done = {k.decode() for k in r.hkeys(f"done:{TAG}")}
    runs = {k.decode(): int(v) for k, v in r.hgetall(f"runs:{TAG}").items()}
    lost = set(feed.unconfirmed) - done
    again = sum(1 for count in runs.values() if count > 1)
    assert max(runs.values()) <= 2, "a task ran more than twice over one failover"
    assert worker.proc.poll() is None and "Traceback" not in worker.output, worker.output
    print(
        f"master {old} killed, {new} promoted, backlog {backlog}: {len(feed.confirmed)} enqueues"
        f" replicated, {len(feed.unconfirmed)} not confirmed ({len(lost)} of them lost),"
        f" {len(feed.after)} after the kill, {len(feed.refused)} calls refused over"
        f" {feed.refused_at[-1] - feed.refused_at[0]:.1f} s; {again} ran twice; rejoined in {rejoin_s:.1f} s"
    )
