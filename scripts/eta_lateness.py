"""ETA lateness: how long after its due time a delayed task starts, at light load.

Starts its own redis-server (free port) and one gevent worker, enqueues N countdown tasks whose
due times are spread over a few seconds, and reports p50/p99/max of (start time - ETA). Each
task records its own lateness, measured inside the worker. Bounded in count and time; stops
what it started by PID.

    python scripts/eta_lateness.py [--tasks 1000] [--spread 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which ETAs are spread")
    args = parser.parse_args()
    from greenq.embedded import RedisServer

    server = RedisServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env.update(GREENQ_BROKER_URL=server.url, GREENQ_WORKER_CPU_WORKERS="0", PYTHONUNBUFFERED="1")
    os.environ["GREENQ_BROKER_URL"] = server.url
    worker = subprocess.Popen(
        [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-c", "100", "-l", "WARNING"],
        cwd=ROOT,
        env=env,
    )
    try:
        from tests.apps import basic

        start = time.time() + 2.0
        results = [
            basic.on_time.apply_async(("eta",), eta=start + i * args.spread / args.tasks)
            for i in range(args.tasks)
        ]
        lateness = sorted(r.get(timeout=args.spread + 60) * 1000 for r in results)
        n = len(lateness)
        print(
            f"ETA lateness over {n:,} tasks spread over {args.spread:.0f} s, one gevent worker -c 100: "
            f"p50 {lateness[n // 2]:.1f} ms, p99 {lateness[int(n * 0.99) - 1]:.1f} ms, "
            f"max {lateness[-1]:.1f} ms, min {lateness[0]:.1f} ms"
        )
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
