"""``greenq demo`` interrupted with Ctrl-C leaves nothing behind, and a rerun is not slowed down.

Real processes: the demo, its HTTP target and its gevent worker, a real SIGINT to the demo's
process group (what a terminal's Ctrl-C sends), and the suite's Redis server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from greenq.broker.keys import Keys

ROOT = Path(__file__).resolve().parent.parent


class Demo:
    """A ``greenq demo`` subprocess in its own process group, its output collected as it comes
    (the progress bar uses carriage returns, not newlines)."""

    def __init__(self, url: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenq", "demo", *args],
            env={**env, "GREENQ_BROKER_URL": url, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As in a terminal, whatever this suite inherited: a shell ignores SIGINT in what it
            # starts with `&`, and an ignored SIGINT is ignored by the demo's Python too.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.output = ""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            with self._cond:
                self.output += chunk.decode()
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (found := re.search(pattern, self.output)):
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"no {pattern!r} in:\n{self.output[-3000:]}"
                self._cond.wait(min(left, 0.5))
            return found

    def wait(self, timeout: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _demo_keys(r: redis.Redis) -> list[bytes]:
    return r.keys("greenq:{q:greenq-demo-*")


def test_interrupted_demo_cleans_up_and_a_rerun_runs_at_full_speed(redis_url: str, r: redis.Redis) -> None:
    # A queue left by a demo that was killed outright: the next run deletes it.
    r.sadd(Keys.QUEUES, "greenq-demo-dead0000")
    r.xadd(Keys.stream("greenq-demo-dead0000"), {"m": b"{}"})
    first = Demo(redis_url, "--tasks", "4000", "-c", "50", "--delay-ms", "100")
    try:
        pids = first.wait_for(r"\(pid (\d+)\), worker -c 50 \(pid (\d+)\)")
        first.wait_for(r"\d+/4,000 ")  # the first progress bar: tasks are running
        os.killpg(first.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the foreground group
        assert first.wait() == 130, first.output
    finally:
        first.kill()
    interrupted = re.search(r"interrupted after ([\d,]+) of 4,000 tasks", first.output)
    assert interrupted, first.output
    assert "deleted greenq-demo-dead0000, left behind by an earlier demo" in first.output
    assert re.search(
        r"stopped the worker and the target; deleted queue greenq-demo-[0-9a-f]{8}", first.output
    )
    for pid in map(int, pids.groups()):  # the target and the worker were stopped and reaped
        assert not os.path.exists(f"/proc/{pid}")
    assert _demo_keys(r) == [] and not any(q.startswith(b"greenq-demo-") for q in r.smembers(Keys.QUEUES))
    left = 4000 - int(interrupted[1].replace(",", ""))

    second = Demo(redis_url, "--tasks", "300", "-c", "50", "--delay-ms", "50")
    try:
        assert second.wait() == 0, second.output
    finally:
        second.kill()
    elapsed = float(re.search(r"completed 300 HTTP tasks in ([\d.]+) s", second.output)[1])
    # Behind the first run's leftovers it would wait for them: left x 100 ms / 50 slots.
    assert elapsed < left * 0.1 / 50 / 2, (elapsed, left, second.output)
    assert _demo_keys(r) == []
