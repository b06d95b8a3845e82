"""Runs the demo: target + worker as child processes, tasks enqueued here, figures printed.

Everything runs on 127.0.0.1 and is stopped by PID at the end, also on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from greenq.config import mask_url


def _start(args: list[str], ready: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        seen.append(line)
        if ready in line:
            return proc, line
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{args[1]} did not start:\n{''.join(seen)[-3000:]}")


def _bar(done: int, total: int, started: float) -> str:
    width = 30
    filled = int(width * done / total)
    rate = done / max(1e-9, time.monotonic() - started)
    return f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}  {rate:,.0f} tasks/s"


def run_demo(tasks: int = 3000, concurrency: int = 500, delay_ms: int = 100) -> int:
    """Start a target and a worker, push ``tasks`` HTTP tasks through, print throughput/latency."""
    from greenq.demo.tasks import app, fetch

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    url = app.broker_url()
    env["GREENQ_BROKER_URL"] = url
    print(f"greenq demo: broker {mask_url(url)}")
    target, line = _start(["-m", "greenq.demo.target"], "listening on", env)
    port = int(line.split()[-1])
    worker, _ = _start(
        [
            "-m",
            "greenq",
            "worker",
            "-A",
            "greenq.demo.tasks",
            "-c",
            str(concurrency),
            "-Q",
            "demo",
            "-n",
            "demo@%h",
            "-l",
            "INFO",
        ],
        "worker ready",
        env,
    )
    assert worker.stdout is not None
    drain = subprocess.Popen(["cat"], stdin=worker.stdout, stdout=subprocess.DEVNULL)
    try:
        print(
            f"  target http://127.0.0.1:{port}/delay/{delay_ms} (pid {target.pid}), "
            f"worker -c {concurrency} (pid {worker.pid})"
        )
        target_url = f"http://127.0.0.1:{port}/delay/{delay_ms}"
        started = time.monotonic()
        enqueued_at = time.time()
        results = fetch.map([(target_url,)] * tasks)
        enqueue_s = time.monotonic() - started
        latencies = []
        for done, result in enumerate(results, 1):
            status = result.get(timeout=120)
            if status != 200:
                raise RuntimeError(f"task {result.id} got HTTP {status}")
            latencies.append(result.info["date_done"] - enqueued_at)
            if done % 100 == 0 or done == tasks:
                print(_bar(done, tasks, started), end="", flush=True)
        elapsed = time.monotonic() - started
        latencies.sort()
        ideal = tasks / concurrency * delay_ms / 1000
        print()
        print(f"  enqueued {tasks:,} in {enqueue_s * 1000:.0f} ms ({tasks / enqueue_s:,.0f}/s, pipelined)")
        print(
            f"  completed {tasks:,} HTTP tasks in {elapsed:.2f} s: {tasks / elapsed:,.0f} tasks/s; "
            f"ideal {ideal:.2f} s, efficiency {ideal / elapsed:.0%}"
        )
        print(
            f"  time from enqueue to done: p50 {latencies[len(latencies) // 2]:.2f} s, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} s (all enqueued at once)"
        )
        return 0
    finally:
        for proc in (worker, target):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (worker, target):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        drain.wait(5)
        print("  stopped the worker and the target")
