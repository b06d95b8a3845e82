#!/usr/bin/env python
"""The crawl of docs/flow-control.md, greenq against the best Celery setup (issue 20).

    nice -n 10 python scripts/bench_crawl.py [--urls 10000] [--hosts 50] [--workers 2] [-c 100]

10,000 URLs over 50 hosts (127.0.0.1 ... 127.0.0.50, tests/flow/target.py), each answering after
100 ms and refusing (429) a request that would make more than 4 in progress or more than 20 in
the last second for its host. The limits asked of the queue are the same: at most 4 connections
and 20 requests/s per host, so the ideal is URLs per host / 20 s (10 s), and a perfect run has
no refusal. greenq: one task with ``limit_key`` = host, ``concurrency_limit=4``,
``rate_limit="20/s"``, held by all workers together. Celery cannot key a limit: one task per
host with a per-worker ``rate_limit`` of 20/s / workers, and nothing bounds connections per
host. Both fetch with greenq.http. Each run is bounded (--timeout) and its processes are
stopped by PID; prints one table row per framework.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import bench_crawl_tasks as tasks
import psutil
import redis

from greenq.embedded import RedisServer, bundled_binary

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
HOLD_MS = 100
LIMITS = ("--limit-concurrency", "4", "--limit-rate", "20")  # the target's own, per host
HEADER = (
    "| framework | task runs | wall time | ideal | efficiency | answered 200 "
    "| refused: over 4 at once | refused: over 20 in 1 s |"
)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return 0.0


def target_stats(port: int) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as reply:
        found: dict[str, dict[str, int]] = json.loads(reply.read())
    return found


def run(label: str, args: argparse.Namespace, url: str, log_dir: Path) -> dict[str, Any]:
    """One crawl; ``label`` is a framework, or ``framework@rate`` to ask the queue for another
    per-host rate than the target's 20/s (a margin for timing jitter)."""
    framework, _, rate = label.partition("@")
    client = redis.Redis.from_url(url)
    client.flushall()
    target = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "flow" / "target.py"), "--hosts", str(args.hosts), *LIMITS],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert target.stdout is not None
    port = int(target.stdout.readline().split()[-1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")},
        "BENCH_FRAMEWORK": framework,
        "BENCH_REDIS_URL": url,
        "CRAWL_HOSTS": str(args.hosts),
        "CRAWL_WORKERS": str(args.workers),
        "CRAWL_RATE": rate or "20",
        "PYTHONPATH": f"{SCRIPTS}{os.pathsep}{ROOT}",
    }
    if framework == "greenq":
        worker = [sys.executable, "-m", "greenq", "worker", "-A", "bench_crawl_tasks:app", "-Q", "crawl"]
        worker += ["-c", str(args.concurrency), "-l", "WARNING"]
    else:
        worker = [sys.executable, "-m", "celery", "-A", "bench_crawl_tasks:celery", "worker", "-P", "gevent"]
        worker += ["-c", str(args.concurrency), "-Q", "crawl", "-l", "WARNING", "--without-gossip"]
        worker += ["--without-mingle", "--without-heartbeat"]
    workers = [
        spawn(
            [*worker, *(["-n", f"w{i}@%h"] if framework == "celery" else [])],
            env,
            log_dir / f"{label}{i}.log",
        )
        for i in range(args.workers)
    ]
    try:
        time.sleep(args.warmup)  # workers up and waiting before the clock starts
        rng = random.Random(20)
        urls = [f"http://127.0.0.{1 + i % args.hosts}:{port}/hold/{HOLD_MS}" for i in range(args.urls)]
        rng.shuffle(urls)
        started = time.monotonic()
        if framework == "greenq":
            tasks.make_greenq(url, float(rate or 20)).tasks["crawl.fetch"].map([(u,) for u in urls])
        else:
            producer_app = tasks.make_celery(url, args.hosts, args.workers, float(rate or 20))
            with producer_app.producer_or_acquire() as producer:
                for u in urls:
                    producer_app.send_task(f"crawl.fetch_h{tasks.host_index(u)}", (u,), producer=producer)
        enqueued = time.monotonic() - started
        deadline = started + args.timeout
        while int(client.get("crawl:done") or 0) < args.urls and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        done, ok = (int(client.get(key) or 0) for key in ("crawl:done", "crawl:status:200"))
        stats = target_stats(port)
        worker_cpu = sum(tree_cpu(proc.pid) for proc in workers)
        calls = {k: v["calls"] for k, v in client.info("commandstats").items()}
        target_cpu = tree_cpu(target.pid)
    finally:
        for proc in workers:
            stop(proc)
        target.kill()
        target.wait(10)
    ideal = args.urls / args.hosts / 20
    return {
        "framework": label,
        "done": done,
        "wall_s": round(elapsed, 2),
        "enqueue_s": round(enqueued, 2),
        "ideal_s": ideal,
        "efficiency": round(ideal / elapsed, 3) if done >= args.urls else None,
        "ok": ok,
        "refused": sum(h.get("refused", 0) for h in stats.values()),
        "refused_busy": sum(h.get("refused_busy", 0) for h in stats.values()),
        "refused_rate": sum(h.get("refused_rate", 0) for h in stats.values()),
        "most_connections_per_host": max((h.get("most", 0) for h in stats.values()), default=0),
        "worker_cpu_s": round(worker_cpu, 2),
        "redis_calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])[:12]),
        "target_cpu_s": round(target_cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds for the workers to start")
    parser.add_argument("--only", default="greenq,celery", help="frameworks; name@rate asks another rate")
    args = parser.parse_args(argv)
    server = RedisServer(bundled_binary()).start()
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_crawl_{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run(framework, args, server.url, log_dir) for framework in args.only.split(",")]
    finally:
        server.stop()
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        eff = f"{row['efficiency']:.0%}" if row["efficiency"] is not None else "did not finish"
        print(
            f"| {row['framework']} | {row['done']:,} | {row['wall_s']} s | {row['ideal_s']:g} s | {eff} | "
            f"{row['ok']:,} | {row['refused_busy']:,} | {row['refused_rate']:,} |"
        )
    print(json.dumps(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
