"""The chaos run in CI (scripts/chaos.py, bounded and seeded), and a regression test for each bug
that the chaos run or the fuzzers found (docs/reliability.md lists them).

The run starts its own Redis, proxy and workers and checks every task against
docs/semantics.md; on failure the assertion shows its table, its violations and its seed, so
``python3 scripts/chaos.py --seconds 60 --seed SEED`` replays the same fault schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from greenq.broker.keys import GROUP, Keys
from greenq.broker.recovery import Upkeep
from greenq.broker.stack import Link
from tests.apps import basic

pytestmark = pytest.mark.chaos
ROOT = Path(__file__).resolve().parent.parent


def test_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(10**6))
    command = [
        sys.executable,
        str(ROOT / "scripts" / "chaos.py"),
        "--seconds",
        "45",
        "--seed",
        str(seed),
        "--fault-every",
        "2.5",
        "--rate",
        "25",
        "--lost-timeout",
        "3",
        "--drain-timeout",
        "60",
        "--out",
        str(tmp_path / "run"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    pipe = subprocess.PIPE
    run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=pipe, stderr=pipe, text=True)
    try:
        out, err = run.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGTERM)  # it stops its workers, proxy and Redis, by PID
        out, err = run.communicate(timeout=25)
        raise AssertionError(f"chaos run (seed {seed}) did not finish:\n{out}\n{err[-3000:]}") from None
    report = f"seed {seed}\n{out}\n{err[-3000:]}"
    assert run.returncode == 0, report
    assert "| lost late-ack tasks" in out, report


class RacedUpkeep(Upkeep):
    """Recovery that saw ``consumer`` without a heartbeat a moment ago (the race: the heartbeat
    came back between that check and ``recover.lua``'s own)."""

    def __init__(self, link: Link, consumer: str) -> None:
        super().__init__(link, 10_000)
        self.consumer = consumer

    def _dead_consumers(self, queues: list[str], own_consumer: str) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(Keys.stream(queues[0]), self.consumer)]


def test_recovery_of_a_consumer_whose_heartbeat_came_back_is_a_no_op(redis_url: str) -> None:
    """Found by the chaos run: recover.lua answered ``{0, 0, -1}`` for a live consumer, and the
    maintenance loop crashed on ``dead.extend(0)`` (no heartbeat for a second, no recovery)."""
    client = redis.Redis.from_url(redis_url)
    stream = Keys.stream("default")
    client.xgroup_create(stream, GROUP, "0", mkstream=True)
    client.xadd(stream, {"m": b"{}"})
    client.xreadgroup(GROUP, "alive", {stream: ">"})
    client.set(Keys.worker("alive"), b"{}", px=10_000)
    upkeep = RacedUpkeep(Link(redis_url, 5, 5), "alive")
    try:
        assert upkeep.recover(["default"], "me", 5) == (0, [])
    finally:
        upkeep.close()
    assert client.xpending(stream, GROUP)["pending"] == 1, "the live consumer keeps its message"


def test_a_dead_letter_refused_at_maxmemory_strands_nothing(app, r: redis.Redis, start_worker) -> None:
    """Found by the chaos run: a poison message whose dead letter Redis refused (at maxmemory)
    crashed the fetch loop, and the rest of its batch stayed in the live worker's pending list
    for good. Now the batch is returned and the poison message is dead-lettered later."""
    worker = start_worker("-c", "1", "--prefetch-multiplier", "4")
    worker.signal(signal.SIGSTOP)  # both messages wait for it, to arrive in one batch
    r.xadd(Keys.stream("default"), {"m": b"not json at all"})
    result = basic.add.delay(2, 3)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 1024 * 1024)
    filled = 0
    try:
        while True:
            r.set(f"fill:{filled}", b"x" * 65536)
            filled += 1
    except redis.ResponseError:
        pass  # full: every write is refused now
    worker.signal(signal.SIGCONT)
    try:
        worker.wait_for("maxmemory")  # the refusal, logged
    finally:
        r.delete(*[f"fill:{i}" for i in range(filled)])
        r.config_set("maxmemory", 0)
    assert result.get(timeout=30) == 5
    worker.wait_for("dead-lettering message")
    assert "crashed" not in worker.output


def test_recovery_leaves_a_message_fetched_within_the_lost_timeout_for_later(redis_url: str) -> None:
    """Found by the chaos run (seed 11): after a stall every heartbeat lapses at once, and each
    worker recovered what the others had just fetched, again and again: a healthy late-ack task
    reached max_deliveries in a second (FAILURE "killed its worker", then SUCCESS from its five
    concurrent runs). An entry delivered less than the lost timeout ago is not recovered yet."""
    client = redis.Redis.from_url(redis_url)
    stream = Keys.stream("default")
    client.xgroup_create(stream, GROUP, "0", mkstream=True)
    client.xadd(stream, {"m": b"{}"})
    client.xreadgroup(GROUP, "lapsed", {stream: ">"})  # fetched just now; no heartbeat
    upkeep = Upkeep(Link(redis_url, 5, 5), 10_000)
    try:
        assert upkeep.recover(["default"], "me", 5, min_idle_ms=60_000) == (0, [])
        assert client.xpending(stream, GROUP)["pending"] == 1
        assert upkeep.recover(["default"], "me", 5, min_idle_ms=0) == (1, [])  # old enough
    finally:
        upkeep.close()
    assert client.xpending(stream, GROUP)["pending"] == 0 and client.xlen(stream) == 1
