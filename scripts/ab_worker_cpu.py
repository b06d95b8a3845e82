#!/usr/bin/env python
"""Worker CPU per task, two checkouts side by side: a steadier A/B than throughput on a shared host.

    git worktree add /tmp/before <commit>
    python scripts/ab_worker_cpu.py /tmp/before . [-n 20000] [--rounds 5]

Each round, for each checkout in turn, pre-fills N tasks of tests/apps/basic.py (``incr_shared``:
one INCR through app.redis; ``add``: results on), starts that checkout's gevent worker at -c 500,
waits until all are done and reads the worker's CPU seconds (start-up included). Prints the
medians. One redis-server (the bundled binary) on a free port; workers stopped by PID.
"""

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
sys.path.insert(0, str(ROOT))

from greenq import GreenQ  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary  # noqa: E402

KINDS = ("incr", "add")


def drain_cpu_s(root: str, url: str, r: redis.Redis, producer: GreenQ, kind: str, n: int) -> float:
    r.flushall()
    stream = "greenq:{q:default}:stream"
    if kind == "incr":
        producer.enqueue_many([("tests.apps.basic.incr_shared", ["ab:n"], None)] * n)

        def done() -> bool:
            return int(r.get("ab:n") or 0) >= n
    else:
        producer.enqueue_many([("tests.apps.basic.add", [1, 2], None)] * n)

        def done() -> bool:
            return r.xlen(stream) == 0 and r.xpending(stream, "greenq")["pending"] == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"GREENQ_BROKER_URL": url, "GREENQ_WORKER_CPU_WORKERS": "0", "PYTHONPATH": root}
    args = [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-c", "500", "-l", "WARNING"]
    worker = subprocess.Popen(args, cwd=root, env=env)
    try:
        process = psutil.Process(worker.pid)
        deadline = time.monotonic() + 120
        while not done():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{root}: the worker did not drain {n} {kind} tasks")
            time.sleep(0.01)
        times = process.cpu_times()
        return times.user + times.system
    finally:
        worker.kill()
        worker.wait(10)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("-n", type=int, default=20_000, help="tasks per drain")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    server = RedisServer(bundled_binary()).start()
    r = redis.Redis.from_url(server.url)
    producer = GreenQ("ab", broker=server.url)
    cpu: dict[tuple[str, str], list[float]] = {(t, k): [] for t in trees for k in KINDS}
    try:
        for round_no in range(1, args.rounds + 1):
            for tree, root in trees.items():
                for kind in KINDS:
                    cpu[(tree, kind)].append(drain_cpu_s(root, server.url, r, producer, kind, args.n))
            latest = ", ".join(f"{t}/{k} {v[-1]:.2f} s" for (t, k), v in cpu.items())
            print(f"round {round_no}/{args.rounds}: {latest}", flush=True)
    finally:
        producer.close()
        server.stop()
    for kind in KINDS:
        before, after = cpu[("before", kind)], cpu[("after", kind)]
        print(
            f"{kind}: worker CPU per task {statistics.median(before) / args.n * 1e6:.1f} us before "
            f"({min(before):.2f}-{max(before):.2f} s per drain), "
            f"{statistics.median(after) / args.n * 1e6:.1f} us after ({min(after):.2f}-{max(after):.2f} s)"
        )


if __name__ == "__main__":
    main()
