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
    # The server drops the connection under 300 callers: nobody gets another's reply, and the
    # next command reconnects.
    dropped = report["dropped"]
    assert dropped["killed"] >= 1 and dropped["wrong"] == 0
    assert dropped["answered"] == 300 and dropped["after"] == 1
