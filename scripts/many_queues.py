#!/usr/bin/env python
"""Wake-up latency and idle cost of one worker listening on many queues (issue 23, item 5).

    nice -n 10 python scripts/many_queues.py [--queues 1,100,1000] [-c 50] [--samples 200] [--idle 10]

For each queue count N: starts a redis-server (the bundled binary, free port) and one gevent
``greenq worker -Q q0,...,q(N-1) -c C`` on tests/apps/basic.py, lets it settle, reads its CPU and
Redis's over ``--idle`` seconds of idling, then sends ``--samples`` tasks one at a time, each to
the next queue in turn, and times ``add.delay().get()`` (enqueue, wake-up, run, result). Prints
p50/p90/p99 and the idle CPU of the worker and of Redis. Every child is stopped by PID, the whole
run is bounded (``--timeout``).
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

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from greenq import GreenQ  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary  # noqa: E402


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def start_worker(url: str, queues: list[str], concurrency: int, timeout_s: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"GREENQ_BROKER_URL": url, "GREENQ_WORKER_CPU_WORKERS": "0", "GREENQ_WORKER_LOG_TASKS": "false"}
    env["PYTHONPATH"] = str(ROOT)
    args = [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-P", "gevent"]
    args += ["-c", str(concurrency), "-Q", ",".join(queues), "-l", "INFO"]
    worker = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert worker.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
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


def run(count: int, args: argparse.Namespace) -> dict[str, float]:
    server = RedisServer(bundled_binary()).start()
    worker = None
    try:
        r = redis.Redis.from_url(server.url)
        queues = [f"q{i}" for i in range(count)]
        worker = start_worker(server.url, queues, args.concurrency, args.timeout)
        app = GreenQ("many", broker=server.url)
        app.send_task("tests.apps.basic.add", (0, 0), queue=queues[-1]).get(timeout=30)  # warm
        time.sleep(args.settle)  # let start-up work (group creation, first recovery pass) finish
        process = psutil.Process(worker.pid)
        cpu0, rcpu0, t0 = sum(process.cpu_times()[:2]), redis_cpu_s(r), time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - t0
        idle = (sum(process.cpu_times()[:2]) - cpu0) / elapsed
        redis_idle = (redis_cpu_s(r) - rcpu0) / elapsed
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
            "p50_ms": statistics.median(latencies),
            "p90_ms": latencies[int(len(latencies) * 0.9)],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "idle_worker_pct": idle * 100,
            "idle_redis_pct": redis_idle * 100,
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
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=120.0, help="worker start-up limit")
    args = parser.parse_args()
    for count in (int(c) for c in args.queues.split(",")):
        row = run(count, args)
        print(
            f"{row['queues']:>5} queues ({row['queues'] * 10} band streams), -c {args.concurrency}: "
            f"p50 {row['p50_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms; "
            f"idle: worker {row['idle_worker_pct']:.2f} % of a core, redis {row['idle_redis_pct']:.2f} %",
            flush=True,
        )


if __name__ == "__main__":
    main()
