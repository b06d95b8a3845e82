"""Sharded hot queues (``queue_shards``): producers spread a queue over N streams, round robin
or by key; real workers drain every shard, taking from each in turn; status shows the queue
once, per shard on request (docs/scaling.md, "Sharded queues")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import redis

from greenq import ConfigError, GreenQ
from greenq import shards as sharding
from greenq.broker.keys import Keys
from tests.conftest import ROOT
from tests.scale import scale_app


def test_the_setting_and_the_shard_helpers() -> None:
    assert sharding.check({"http": "8"}, "code") == {"http": 8}
    for bad in ({"ht tp": 2}, {"http": 1}, {"http": 2000}, {"http": True}):
        with pytest.raises(ConfigError, match="queue_shards"):
            GreenQ("x", broker="redis://h", queue_shards=bad).conf  # noqa: B018
    with pytest.raises(ConfigError, match="sharded queue has no queue rate limit"):
        GreenQ("x", broker="redis://h", queue_shards={"a": 2}, queue_rate_limits={"a": "5/s"}).conf  # noqa: B018
    assert sharding.expand(["hi", "a", "lo"], {"a": 2}) == ["hi", "a", "a#0", "a#1", "lo"]
    assert sharding.rotate(["hi", "a", "a#0", "a#1", "lo"], 4) == ["hi", "a#0", "a#1", "a", "lo"]
    picker = sharding.Picker()
    assert [picker.pick("a", 3, None) for _ in range(4)] == ["a#0", "a#1", "a#2", "a#0"]
    assert len({picker.pick("a", 3, "user:42") for _ in range(5)}) == 1


def test_producers_spread_round_robin_or_by_key(redis_url: str, r: redis.Redis) -> None:
    app = GreenQ("shards", broker=redis_url, queue_shards={"hot": 4})
    app.enqueue_many([("t.x", [i], None) for i in range(400)], queue="hot")
    assert [r.xlen(Keys.stream(f"hot#{i}")) for i in range(4)] == [100, 100, 100, 100]
    assert r.xlen(Keys.stream("hot")) == 0
    for i in range(10):
        app.send_task("t.x", [i], queue="hot", shard_key="customer:7")  # one key, one shard, in order
    lengths = [r.xlen(Keys.stream(f"hot#{i}")) for i in range(4)]
    assert sorted(lengths) == [100, 100, 100, 110]
    first = app.send_task("t.x", [1], queue="hot", task_id="job-1", unique=True)
    again = app.send_task("t.x", [2], queue="hot", task_id="job-1", unique=True)  # same key, same shard
    assert (first.id, again.id) == ("job-1", "job-1")
    assert sum(r.xlen(Keys.stream(f"hot#{i}")) for i in range(4)) == 411
    other = GreenQ("shards", broker=redis_url)  # no setting: the queue itself, which workers read too
    other.send_task("t.x", [0], queue="hot")
    assert r.xlen(Keys.stream("hot")) == 1


def test_workers_drain_every_shard_in_turn_retries_stay_in_their_shard_and_status_shows_it_once(
    producer, start_worker, redis_url: str, r: redis.Redis
) -> None:
    app = producer(redis_url)
    app.override({"queue_shards": {"hot": 4}}, "test")
    env = {"COUNTER_URL": redis_url, "GREENQ_QUEUE_SHARDS": '{"hot": 4}'}
    results = scale_app.where.map([("drain",)] * 800, queue="hot")
    retried = scale_app.where.apply_async(("retry", True), queue="hot", shard_key="k")
    start_worker("-P", "gevent", "-c", "5", "-Q", "hot", app="tests.scale.scale_app", env=env)
    assert Counter(result.get(timeout=60) for result in results) == {f"hot#{i}": 200 for i in range(4)}
    first_runs = [q.decode() for q in r.lrange("order:drain", 0, 199)]
    shares = Counter(first_runs)
    assert set(shares) == {f"hot#{i}" for i in range(4)} and min(shares.values()) >= 20, shares
    shard = retried.get(timeout=30)
    assert [q.decode() for q in r.lrange("order:retry", 0, -1)] == [shard, shard]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env = {**clean, "GREENQ_BROKER_URL": redis_url, "GREENQ_QUEUE_SHARDS": '{"hot": 4}'}

    def status(*flags: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "greenq", "status", *flags],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    rows = json.loads(status("--json").stdout)["queues"]
    assert [(q["name"], q["shards"], q["ready"]) for q in rows] == [("hot", 4, 0)]
    detail = json.loads(status("--json", "--shards").stdout)["queues"][0]["per_shard"]
    assert sorted(q["name"] for q in detail) == ["hot", "hot#0", "hot#1", "hot#2", "hot#3"]
    text = status("--shards").stdout
    assert "hot (4 shards)" in text and "  hot#3" in text
