#!/usr/bin/env python
"""Periodic schedules, measured: how late each fire starts, and what idle schedules cost.

    python scripts/schedule_lateness.py [--minutes 10] [--workers 3] [--idle-schedules 1000]

1. Lateness: an every-second schedule (tests/apps/sched_app.py) fired by ``--workers`` gevent
   workers for ``--minutes``; each run records when it started, and its task id names its fire
   time, so lateness = start - fire time (p50/p99/max). Also checks that no fire ran twice and
   none was skipped.
2. Idle cost: one worker whose app has ``--idle-schedules`` hourly schedules, none due during the
   run: its CPU share and the Redis commands per second it sends, over 30 s.

Starts its own redis-server (the bundled binary) on a free port and stops every process it
started, by PID. Prints the figures for docs/measurements.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from greenq.embedded import RedisServer, bundled_binary  # noqa: E402

IDLE_APP = """
from greenq import GreenQ
app = GreenQ("idle", beat_schedule={{
    f"hourly-{{i}}": {{"task": "idle_app.noop", "schedule": 3600.0 + i}} for i in range({count})
}})

@app.task
def noop() -> None:
    return None
"""


def worker(url: str, app: str, extra_env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"GREENQ_BROKER_URL": url, "GREENQ_WORKER_CPU_WORKERS": "0", **extra_env}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    args = [sys.executable, "-m", "greenq", "worker", "-A", app, "-c", "50", "-n", name, "-l", "WARNING"]
    return subprocess.Popen(args, cwd=ROOT, env=env)


def lateness(url: str, r: redis.Redis, minutes: float, workers: int) -> None:
    procs = [worker(url, "tests.apps.sched_app", {}, ROOT, f"late{i}@%h") for i in range(workers)]
    try:
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            done = r.llen("ticks:t")
            print(
                f"\r  {done:,} fires so far ({(deadline - time.monotonic()) / 60:.1f} min left)",
                end="",
                flush=True,
            )
            time.sleep(1.0)
        print()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    starts = [entry.decode().split() for entry in r.lrange("ticks-at:t", 0, -1)]
    fires = sorted(int(task_id.rpartition("@")[2]) for task_id, _ in starts)
    late_ms = sorted(float(at) * 1000 - int(task_id.rpartition("@")[2]) for task_id, at in starts)
    expected = list(range(fires[0], fires[-1] + 1000, 1000))
    print(f"lateness over {minutes:g} min, {workers} workers, every-second schedule: {len(fires):,} fires")
    print(f"  duplicates: {len(fires) - len(set(fires))}, skipped: {len(set(expected) - set(fires))}")
    p99 = late_ms[min(len(late_ms) - 1, int(len(late_ms) * 0.99))]
    p50 = statistics.median(late_ms)
    print(f"  start - fire time: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {late_ms[-1]:.1f} ms")


def idle_cost(url: str, r: redis.Redis, count: int, seconds: float = 30.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "idle_app.py").write_text(IDLE_APP.format(count=count))
        proc = worker(url, "idle_app", {}, Path(tmp), "idle@%h")
        try:
            time.sleep(5.0)  # start-up and the first round (reads every schedule's state) are not idle
            process = psutil.Process(proc.pid)
            cpu0, cmd0, t0 = (
                sum(process.cpu_times()[:2]),
                r.info("stats")["total_commands_processed"],
                time.time(),
            )
            time.sleep(seconds)
            cpu1, cmd1, t1 = (
                sum(process.cpu_times()[:2]),
                r.info("stats")["total_commands_processed"],
                time.time(),
            )
        finally:
            proc.terminate()
            proc.wait(30)
    wall = t1 - t0
    print(f"idle worker with {count:,} schedules, none due, over {wall:.0f} s:")
    cpu_pct, commands = 100 * (cpu1 - cpu0) / wall, (cmd1 - cmd0 - 2) / wall
    print(f"  worker CPU {cpu_pct:.2f} % of a core; Redis {commands:.1f} commands/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="0: only the idle cost")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--idle-schedules", type=int, default=1000)
    args = parser.parse_args()
    server = RedisServer(bundled_binary()).start()
    try:
        r = redis.Redis.from_url(server.url)
        if args.minutes > 0:
            lateness(server.url, r, args.minutes, args.workers)
            r.flushall()
        idle_cost(server.url, r, 0)  # the same worker with no schedule: what the rest costs
        r.flushall()
        idle_cost(server.url, r, args.idle_schedules)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
