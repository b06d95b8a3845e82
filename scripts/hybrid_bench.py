"""CPU-bound work: prefork efficiency, and a hybrid gevent worker mixing CPU and HTTP tasks.

1. prefork -c 2: 200 pure-Python tasks of ~50 ms; efficiency = (200 x 50 ms / 2 cores) / wall time.
2. gevent -c 100 (hybrid, 2 child processes): 2,000 HTTP tasks (GET a local 100 ms target)
   alone, then the same 2,000 together with 200 cpu=True tasks; the HTTP tasks' finish time
   with CPU work beside them, relative to alone (target: within 30 %).

Starts its own redis-server and HTTP target; stops everything by PID.

    python scripts/hybrid_bench.py [--cpu-nice N] [--skip-prefork]

``--cpu-nice`` is passed to the hybrid worker (default: the worker's default, +10).
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
CPU_TASK_S = 0.05


def _worker(url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env.update(GREENQ_BROKER_URL=url, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenq", "worker", "-A", "tests.apps.basic", "-l", "INFO", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "worker ready" in line:
            break
    subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def _calibrate() -> int:
    """Loop count that takes about CPU_TASK_S of pure-Python work here."""
    from tests.apps import basic

    n = 100_000
    started = time.perf_counter()
    basic.burn.fn(n)
    return int(n * CPU_TASK_S / (time.perf_counter() - started))


def main() -> int:
    from greenq.embedded import RedisServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cpu-nice", type=int, help="niceness of the hybrid worker's children")
    parser.add_argument("--skip-prefork", action="store_true", help="only the hybrid mixed-load run")
    args = parser.parse_args()

    server = RedisServer().start()
    os.environ["GREENQ_BROKER_URL"] = server.url
    target = subprocess.Popen([sys.executable, "-m", "greenq.demo.target"], stdout=subprocess.PIPE, text=True)
    assert target.stdout is not None
    url = f"http://127.0.0.1:{int(target.stdout.readline().split()[-1])}/delay/100"
    from tests.apps import basic

    loops = _calibrate()
    try:
        if not args.skip_prefork:
            _prefork_run(basic, server.url, loops)
        nice = [] if args.cpu_nice is None else ["--cpu-nice", str(args.cpu_nice)]
        worker = _worker(server.url, "--pool", "gevent", "-c", "100", "--cpu-workers", "2", *nice)
        http_alone = _http_run(basic, url)
        cpu_results = basic.burn.map([(loops,)] * 200)
        http_mixed = _http_run(basic, url)
        for result in cpu_results:
            result.get(timeout=120)
        _stop(worker)
        print(
            f"hybrid gevent -c 100 + 2 children (nice {args.cpu_nice if nice else 'default'}): "
            f"2,000 HTTP tasks alone {http_alone:.2f} s, with 200 "
            f"cpu=True tasks beside them {http_mixed:.2f} s ({(http_mixed / http_alone - 1) * 100:+.0f} %)"
        )
        return 0
    finally:
        target.kill()
        server.stop()


def _prefork_run(basic, url: str, loops: int) -> None:
    worker = _worker(url, "--pool", "prefork", "-c", "2")
    started = time.perf_counter()
    for result in basic.burn.map([(loops,)] * 200):
        result.get(timeout=120)
    wall = time.perf_counter() - started
    _stop(worker)
    ideal = 200 * CPU_TASK_S / 2
    print(
        f"prefork -c 2: 200 x {CPU_TASK_S * 1000:.0f} ms tasks in {wall:.2f} s; ideal {ideal:.2f} s; "
        f"efficiency {ideal / wall:.2f}"
    )


def _http_run(basic, url: str) -> float:
    started = time.perf_counter()
    for result in basic.http_get.map([(url,)] * 2000):
        result.get(timeout=120)
    return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
