"""An idle worker's memory over time (issue 24, item 4): is it flat?

    nice -n 10 python3 scripts/chaos/idle_rss.py --minutes 60 --pool gevent

Starts its own Redis and one ``greenq worker`` with nothing to do (it still heartbeats, runs
recovery and the delayed mover, and blocks in its reads), samples the worker's RSS every
``--every`` seconds, and prints the RSS after warm-up, at the end, the peak, and the growth per
hour (least-squares slope after warm-up). Everything it starts it stops, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from greenq.embedded import RedisServer, bundled_binary  # noqa: E402


def slope_per_hour(points: list[tuple[float, int]]) -> float:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var * 3600 if var else 0.0


def main() -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the first counted sample")
    parser.add_argument("--pool", default="gevent", choices=["gevent", "prefork"])
    parser.add_argument("--json", help="write the samples and figures here")
    args = parser.parse_args()
    server = RedisServer(bundled_binary()).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env.update(GREENQ_BROKER_URL=server.url, GREENQ_WORKER_CPU_WORKERS="0", PYTHONPATH=str(ROOT))
    worker = subprocess.Popen(
        [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-P", args.pool, "-l", "ERROR"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[tuple[float, int]] = []
    try:
        proc = psutil.Process(worker.pid)
        started = time.time()
        while time.time() - started < args.minutes * 60:
            time.sleep(args.every)
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            samples.append((time.time() - started, proc.memory_info().rss))
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop()
    counted = [(t, rss) for t, rss in samples if t >= args.warmup] or samples
    figures = {
        "pool": args.pool,
        "minutes": args.minutes,
        "samples": len(samples),
        "rss_after_warmup_mib": round(counted[0][1] / 2**20, 2),
        "rss_at_end_mib": round(samples[-1][1] / 2**20, 2),
        "rss_peak_mib": round(max(r for _, r in samples) / 2**20, 2),
        "growth_mib_per_h": round(slope_per_hour(counted) / 2**20, 3),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "samples": samples}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
