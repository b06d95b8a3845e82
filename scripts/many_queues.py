#!/usr/bin/env python
"""Wake-up latency and idle cost of one worker listening on many queues (issue 23, item 5).

    nice -n 10 python scripts/many_queues.py [--queues 1,100,1000] [-c 50] [--samples 200] [--idle 10]

For each queue count N: starts a redis-server (the bundled binary, free port) and one gevent
``greenq worker -Q q0,...,q(N-1) -c C`` on tests/apps/basic.py, lets it settle, reads its CPU and
Redis's over ``--idle`` seconds of idling, with the commands the idle worker sent (``INFO
commandstats`` deltas: nothing else talks to that Redis meanwhile), then sends ``--samples``
tasks one at a time, each to the next queue in turn, and times ``add.delay().get()`` (enqueue,
wake-up, run, result). Prints p50/p90/p99, the idle CPU of the worker and of Redis, and the
idle commands per second (``-v``: by command). ``--hold`` prints the worker's PID and idles that
many seconds more, for ``py-spy record --pid PID``. Every child is stopped by PID, the whole run
is bounded (``--timeout``). Linux only (CPU times from ``/proc``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_tasks import process_cpu_s  # noqa: E402

from greenq import GreenQ  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary  # noqa: E402


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(r: redis.Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats, which counts the commands scripts run too),
    with the read events (``reads``: about one per round trip, more for a command over 16 KB),
    the bytes sent to Redis (``in``) and the reply bytes (``out``)."""
    stats = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    traffic = r.info("stats")
    return calls | {
        "reads": traffic["total_reads_processed"],
        "in": traffic["total_net_input_bytes"],
        "out": traffic["total_net_output_bytes"],
    }


def start_worker(
    url: str, queues: list[str], concurrency: int, timeout_s: float, settings: list[str]
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"GREENQ_BROKER_URL": url, "GREENQ_WORKER_CPU_WORKERS": "0", "GREENQ_WORKER_LOG_TASKS": "false"}
    env |= dict(setting.split("=", 1) for setting in settings)  # --env GREENQ_...=...
    env["PYTHONPATH"] = str(ROOT)
    args = [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-P", "gevent"]
    args += ["-c", str(concurrency), "-Q", ",".join(queues), "-l", "INFO"]
    worker = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert worker.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = worker.stdout.readline()
        if not line:
            raise RuntimeError("worker exited:\n" + "".join(seen[-30:]))
        seen.append(line)
        if "worker ready" in line:
            threading.Thread(target=worker.stdout.read, daemon=True).start()
            return worker
    worker.kill()
    raise RuntimeError("worker not ready:\n" + "".join(seen[-30:]))


def run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer(bundled_binary()).start()
    worker = None
    try:
        r = redis.Redis.from_url(server.url)
        queues = [f"q{i}" for i in range(count)]
        worker = start_worker(server.url, queues, args.concurrency, args.timeout, args.env)
        app = GreenQ("many", broker=server.url)
        # One task through every queue first: each has its stream (recovery looks at it) and the
        # worker knows each queue's tails, as after any real traffic.
        warm = [app.send_task("tests.apps.basic.add", (0, 0), queue=q) for q in queues]
        for result in warm:
            result.get(timeout=60)
        time.sleep(args.settle)  # let start-up work (group creation, first recovery pass) finish
        calls0 = command_calls(r)
        cpu0, rcpu0, t0 = process_cpu_s(worker.pid), redis_cpu_s(r), time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - t0
        idle = (process_cpu_s(worker.pid) - cpu0) / elapsed
        redis_idle = (redis_cpu_s(r) - rcpu0) / elapsed
        calls1 = command_calls(r)
        # This script's own INFO calls (2 for CPU, 2 for the first counts) are not the worker's.
        calls = {c: n - calls0.get(c, 0) - 4 * (c in ("info", "reads")) for c, n in calls1.items()}
        reads, sent, out = (calls.pop(k) / elapsed for k in ("reads", "in", "out"))
        per_s = {c: n / elapsed for c, n in sorted(calls.items(), key=lambda i: -i[1]) if n > 0}
        if args.hold:
            print(f"worker PID {worker.pid}: idling {args.hold:.0f} s more", flush=True)
            time.sleep(args.hold)
        latencies = []
        for i in range(args.samples):
            queue = queues[i % count]
            started = time.perf_counter()
            app.send_task("tests.apps.basic.add", (i, 1), queue=queue).get(timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(args.gap)  # the worker is idle (waiting) again when the next one is sent
        latencies.sort()
        return {
            "queues": count,
            "p50_ms": statistics.median(latencies) if latencies else 0.0,
            "p90_ms": latencies[int(len(latencies) * 0.9)] if latencies else 0.0,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
            "idle_worker_pct": idle * 100,
            "idle_redis_pct": redis_idle * 100,
            "idle_commands_per_s": sum(per_s.values()),
            "idle_round_trips_per_s": reads,
            "idle_reply_bytes_per_s": out,
            "idle_sent_bytes_per_s": sent,
            "by_command": per_s,
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(10)
        server.stop()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--queues", default="1,100", help="comma-separated queue counts")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200, help="0: measure the idle worker only")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=120.0, help="worker start-up limit")
    parser.add_argument("--env", action="append", default=[], help="GREENQ_SETTING=VALUE for the worker")
    parser.add_argument("--hold", type=float, default=0.0, help="idle this long more, for py-spy")
    parser.add_argument("-v", "--verbose", action="store_true", help="idle commands per second by command")
    args = parser.parse_args()
    for count in (int(c) for c in args.queues.split(",")):
        row = run(count, args)
        latency = (
            f"p50 {row['p50_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; "
            if args.samples
            else ""
        )
        print(
            f"{row['queues']:>5} queues ({row['queues'] * 10} band streams), -c {args.concurrency}: {latency}"
            f"idle: worker {row['idle_worker_pct']:.2f} % of a core, redis {row['idle_redis_pct']:.2f} %, "
            f"{row['idle_commands_per_s']:.0f} commands/s, {row['idle_round_trips_per_s']:.1f} round "
            f"trips/s, {row['idle_sent_bytes_per_s'] / 1000:.0f} kB/s sent, "
            f"{row['idle_reply_bytes_per_s'] / 1000:.1f} kB/s of replies",
            flush=True,
        )
        if args.verbose:
            print("       " + ", ".join(f"{c} {n:.1f}/s" for c, n in row["by_command"].items()), flush=True)


if __name__ == "__main__":
    main()
