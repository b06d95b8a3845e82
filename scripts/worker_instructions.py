#!/usr/bin/env python
"""Instructions per task of a gevent worker, under callgrind: an A/B that host noise cannot move.

    python scripts/worker_instructions.py [--body fetch|fetch_fast|incr|noop|echo] [CHECKOUT ...]

For each checkout (default: this one), a worker of that checkout's greenq drains N1 and then N2
pre-filled tasks of a ``scripts/bench_tasks.py`` body at ``-c 500`` under ``valgrind
--tool=callgrind``, the two runs side by side; (I(N2) - I(N1)) / (N2 - N1) is what one more task
costs, start-up and shutdown cancelling out. Beside it, the same body called with no queue
(``bench_tasks.py ceiling``) the same way. ``noop`` (results off) and ``echo`` (no work, one
result record) have no ceiling: they count what the queue's own bookkeeping costs per message,
without and with the result. Block detection is off (``worker_block_warning=0``): its watchdog
samples by the clock, and under callgrind a run lasts ~50 times longer. Each checkout is
byte-compiled first. Needs valgrind; one redis-server (the bundled binary) and one
HTTP target per run, on free ports, stopped by PID.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_tasks  # noqa: E402

from greenq.embedded import RedisServer, bundled_binary, free_port  # noqa: E402

STREAM = "greenq:{q:bench}:stream"
TIMEOUT_S = 1200


def callgrind(argv: list[str], cwd: str, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    out = log.replace(".log", ".out")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *argv]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def collected(log: str) -> int:
    found = re.search(r"Collected : (\d+)", Path(log).read_text())
    if found is None:
        raise RuntimeError(f"no callgrind total in {log}")
    return int(found.group(1))


def one_run(root: str, body: str, n: int, *, url: str, workdir: str, ceiling: bool) -> int:
    """Instructions of one worker draining ``n`` tasks (or one ceiling of ``n`` calls)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env |= {"PYTHONPATH": root, "BENCH_FRAMEWORK": "greenq", "GREENQ_WORKER_BLOCK_WARNING": "0"}
    log = os.path.join(workdir, f"{'ceiling' if ceiling else 'worker'}-{n}-{abs(hash(root))}.log")
    scripts = os.path.join(root, "scripts")
    arg = url if body.startswith("fetch") else "-"
    server = RedisServer(bundled_binary(), data_dir=tempfile.mkdtemp(dir=workdir)).start()
    try:
        env |= {"BENCH_REDIS_URL": server.url, "GREENQ_BROKER_URL": server.url}
        if ceiling:
            process = callgrind(["bench_tasks.py", "ceiling", body, arg, str(n), "500"], scripts, env, log)
            process.wait(TIMEOUT_S)
            return collected(log)
        app = bench_tasks.make_greenq_app(server.url)
        app.tasks[f"bench.{body}"].map([(arg,) if body.startswith("fetch") else ()] * n)
        app.close()
        argv = ["-m", "greenq", "worker", "-A", "bench_tasks", "-c", "500", "-Q", "bench", "-l", "WARNING"]
        worker = callgrind(argv, scripts, env, log)
        r = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + TIMEOUT_S
        while r.xlen(STREAM) or r.xpending(STREAM, "greenq")["pending"]:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker of {root} did not drain {n} tasks (see {log})")
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)  # a graceful stop: callgrind writes its totals at exit
        worker.wait(TIMEOUT_S)
        return collected(log)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkouts", nargs="*", default=[str(ROOT)])
    bodies = ("fetch", "fetch_fast", "incr", "noop", "echo")
    parser.add_argument("--body", choices=bodies, default="fetch_fast")
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=1500)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="greenq-instructions-")
    port = free_port()
    target = subprocess.Popen(
        [sys.executable, "-m", "greenq.demo.target", "--port", str(port)], stdout=subprocess.PIPE
    )
    assert target.stdout is not None and b"listening" in target.stdout.readline()
    url = f"http://127.0.0.1:{port}/delay/100"
    try:
        runs = [(str(ROOT), True)] if args.body not in ("noop", "echo") else []
        runs += [(str(Path(c).resolve()), False) for c in args.checkouts]
        for root, _ in runs:
            compileall.compile_dir(os.path.join(root, "greenq"), quiet=1)
        for root, ceiling in runs:
            label = "ceiling" if ceiling else root
            print(f"{label}: {args.n1:,} and {args.n2:,} {args.body} tasks under callgrind ...", flush=True)
            run = functools.partial(one_run, root, args.body, url=url, workdir=workdir, ceiling=ceiling)
            with ThreadPoolExecutor(2) as both:
                low, high = both.map(run, (args.n1, args.n2))
            per_task = (high - low) / (args.n2 - args.n1)
            what = "the body with no queue" if ceiling else f"worker of {root}"
            print(f"  {what}: {per_task:,.0f} instructions per task", flush=True)
    finally:
        target.terminate()
        target.wait(10)
    print(f"callgrind files and logs in {workdir}")


if __name__ == "__main__":
    main()
