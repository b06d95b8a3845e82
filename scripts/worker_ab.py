#!/usr/bin/env python
"""One gevent worker on a pre-filled queue, under two or more settings, interleaved: an A/B.

    python scripts/worker_ab.py [--body incr|fetch|fetch_fast] [--n N] [--repeats 3] [-c 500]
        NAME=SETTING=VALUE,... [NAME=...]   e.g. on= off=GREENQ_WORKER_ADAPTIVE_CONCURRENCY=0

Each repeat runs every variant once, in turn (so a slow minute of this shared host hits them
alike): FLUSHALL, pre-fill N tasks of a ``scripts/bench_tasks.py`` body, spawn ``greenq worker
-A bench_tasks --pool gevent -c C`` with the variant's environment, and take the rate and the
worker's CPU per task from the first task taken to the last one done (``scripts/bench.py``'s
window), and the Redis connections the run opened (``HELLO`` calls: the task body's client opens
one per task running at once). Prints each run, then the medians. One redis-server (the bundled
binary) and one HTTP target, on free ports, stopped by PID; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_tasks  # noqa: E402

from greenq.broker.keys import Keys  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary, free_port  # noqa: E402

RUN_TIMEOUT_S = 300


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def one_run(
    url: str, target: str, body: str, n: int, concurrency: int, env: dict[str, str]
) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    app = bench_tasks.make_greenq_app(url)
    ids = [x.id for x in app.tasks[f"bench.{body}"].map([(target,) if body.startswith("fetch") else ()] * n)]
    app.close()
    r.config_resetstat()
    argv = [sys.executable, "-m", "greenq", "worker", "-A", "bench_tasks", "--pool", "gevent"]
    argv += ["-c", str(concurrency), "-Q", bench_tasks.QUEUE, "-l", "WARNING"]
    worker = subprocess.Popen(argv, cwd=ROOT / "scripts", env=env)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        process, stream = psutil.Process(worker.pid), Keys.stream(bench_tasks.QUEUE)
        while r.xlen(stream) >= n:  # the first task taken off the queue
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker exited or took {RUN_TIMEOUT_S} s to start")
            time.sleep(0.002)
        first, cpu = time.monotonic(), cpu_s(process)
        results = [Keys.result(i) for i in ids]
        while (r.exists(*results) if body.startswith("fetch") else int(r.get(bench_tasks.COUNTER) or 0)) < n:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker exited or took {RUN_TIMEOUT_S} s")
            time.sleep(0.01)
        elapsed, cpu = time.monotonic() - first, cpu_s(process) - cpu
    finally:
        worker.terminate()  # stopped by PID
        worker.wait(30)
    hello = r.info("commandstats").get("cmdstat_hello", {}).get("calls", 0)
    return {"rate": n / elapsed, "cpu_ms": cpu / n * 1000, "connections": hello}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--body", choices=("incr", "fetch", "fetch_fast"), default="incr")
    parser.add_argument("--n", type=int, default=0, help="tasks per run (default: incr 20,000, else 10,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=500)
    parser.add_argument("variants", nargs="+", help="NAME=SETTING=VALUE,... (NAME= for the defaults)")
    args = parser.parse_args()
    n = args.n or (20_000 if args.body == "incr" else 10_000)
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variants:
        name, _, settings = spec.partition("=")
        variants[name] = dict(item.split("=", 1) for item in settings.split(",") if item)
    server = RedisServer(binary=bundled_binary(), port=free_port()).start()
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    base |= {"BENCH_REDIS_URL": server.url, "GREENQ_BROKER_URL": server.url, "BENCH_FRAMEWORK": "greenq"}
    http = subprocess.Popen([sys.executable, "-m", "greenq.demo.target", "--port", str(port)], env=base)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    try:
        time.sleep(1.0)  # the target listens
        for repeat in range(args.repeats):
            for name, settings in variants.items():
                run = one_run(
                    server.url,
                    f"http://127.0.0.1:{port}/delay/100",
                    args.body,
                    n,
                    args.concurrency,
                    base | settings,
                )
                runs[name].append(run)
                print(
                    f"{repeat + 1}/{args.repeats} {name:>8}: {run['rate']:,.0f} tasks/s, "
                    f"{run['cpu_ms']:.3f} ms CPU/task, {run['connections']:.0f} Redis connections",
                    flush=True,
                )
    finally:
        http.terminate()
        http.wait(10)
        server.stop()
    print(f"\nmedians, {args.body} x {n:,}, -c {args.concurrency}:")
    for name, done in runs.items():
        rate = statistics.median(r["rate"] for r in done)
        cpu = statistics.median(r["cpu_ms"] for r in done)
        each = ", ".join(f"{r['rate']:,.0f}" for r in done)
        print(f"  {name:>8}: {rate:,.0f} tasks/s, {cpu:.3f} ms CPU/task ({each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
