"""app.redis in a gevent worker: one multiplexed connection for every greenlet's plain commands
(greenq.redis_mux). Run in a patched subprocess (tests/apps/mux_probe.py), on both Redis versions."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def probe(url: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "tests.apps.mux_probe", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_multiplexed_app_redis_keeps_every_reply_with_its_caller(any_redis_url: str) -> None:
    report = probe(any_redis_url)
    assert report["multiplexed"] is True
    # 300 greenlets, five commands each (callbacks: bools, ints, dicts, score tuples), every
    # tenth with an error reply: each got its own answers.
    assert report["own_replies"] == {"all_correct": True, "count": 300}
    # ...over one connection: the pool made only the multiplexer's.
    assert report["connections"] == {"pool_made": 1, "server_clients": 1}
    # A BLPOP goes through the pool and waits there while 100 INCRs go through the multiplexer.
    assert report["blocking"] == {"incr_while_blocked": 100, "was_waiting": True, "popped": "go"}
    # A caller that gave up leaves its reply behind; the next caller gets its own.
    assert report["interrupted"] == {"timed_out": True, "next_reply": "mine"}
    # The connection fails with 300 commands queued. Not yet written: all sent again, each ran
    # once. Written (behind a BLPOP that blocks the connection): all 301 get ConnectionError,
    # none is sent twice.
    dropped = report["dropped"]
    assert dropped["unsent"] == {"queued_at_close": 300, "ok": 300, "ran_twice": 0}
    assert dropped["written"] == {"queued_at_drop": 0, "errors": 301, "ran_twice": 0}
    # The server kills the idle connection: the next command connects again.
    assert dropped["killed"] >= 1 and dropped["after_kill"] == 1
    # A child forked after the multiplexer connected uses the pool, not the parent's socket.
    assert report["forked"] == {"child_exit": 0, "parent_after": 2}
