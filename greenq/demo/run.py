"""Runs the demo: target + worker as child processes, tasks enqueued here, figures printed.

Everything runs on 127.0.0.1. Each run has its own queue (``greenq-demo-<random>``), so an
earlier run's leftovers never slow it down; at the end, also on Ctrl-C, the children are
stopped by PID and the queue is deleted with whatever it still holds, so nothing stays in
``greenq status``. Queues of demos that died without cleaning up (SIGKILL) are deleted by the
next run once no live worker reads them. The children run in their own session: a terminal's
Ctrl-C reaches the demo alone, which then stops them once, gracefully.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from greenq.config import mask_url

QUEUE_PREFIX = "greenq-demo-"


def _start(args: list[str], ready: str, env: dict[str, str], procs: list[subprocess.Popen[Any]]) -> str:
    """Start a child (added to ``procs`` at once, so cleanup finds it) and wait for its ready line."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        seen.append(line)
        if ready in line:
            return line
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"{args[1]} did not start:\n{''.join(seen)[-3000:]}")


def _bar(done: int, total: int, started: float) -> str:
    width = 30
    filled = int(width * done / total)
    rate = done / max(1e-9, time.monotonic() - started)
    return f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,}  {rate:,.0f} tasks/s"


def forget_stale_demo_queues(broker: Any) -> list[str]:
    """Delete the queues of earlier demos that no live worker reads (a demo killed outright)."""
    from greenq import admin

    live = admin.workers(broker)
    read = {q for w in live for q in w.get("queues") or ()}
    stale = [q for q in admin.known_queues(broker) if q.startswith(QUEUE_PREFIX) and q not in read]
    for queue in stale:
        admin.drop_queue(broker, queue)
    return stale


def _stop(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM each child once (graceful), then wait; SIGKILL what does not exit."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_demo(tasks: int = 3000, concurrency: int = 500, delay_ms: int = 100) -> int:
    """Start a target and a worker, push ``tasks`` HTTP tasks through, print throughput/latency."""
    from greenq import admin
    from greenq.demo.tasks import app, fetch

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    url = app.broker_url()
    env["GREENQ_BROKER_URL"] = url
    queue = QUEUE_PREFIX + secrets.token_hex(4)
    print(f"greenq demo: broker {mask_url(url)}, queue {queue}")
    for stale in forget_stale_demo_queues(app.broker):
        print(f"  deleted {stale}, left behind by an earlier demo")
    procs: list[subprocess.Popen[Any]] = []
    done = 0
    try:
        line = _start(["-m", "greenq.demo.target"], "listening on", env, procs)
        port = int(line.split()[-1])
        worker_args = ["-m", "greenq", "worker", "-A", "greenq.demo.tasks", "-c", str(concurrency)]
        worker_args += ["-Q", queue, "-n", "demo@%h", "-l", "INFO", "--shutdown-timeout", "5"]
        _start(worker_args, "worker ready", env, procs)
        drain = subprocess.Popen(
            ["cat"], stdin=procs[1].stdout, stdout=subprocess.DEVNULL, start_new_session=True
        )
        procs.append(drain)
        print(
            f"  target http://127.0.0.1:{port}/delay/{delay_ms} (pid {procs[0].pid}), "
            f"worker -c {concurrency} (pid {procs[1].pid})"
        )
        target_url = f"http://127.0.0.1:{port}/delay/{delay_ms}"
        started = time.monotonic()
        enqueued_at = time.time()
        results = fetch.map([(target_url,)] * tasks, queue=queue)
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
    except KeyboardInterrupt:
        print(f"\n  interrupted after {done:,} of {tasks:,} tasks", flush=True)
        raise
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave the queue behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            _stop(procs)
            with contextlib.suppress(Exception):  # the broker may be the thing that failed
                admin.drop_queue(app.broker, queue)
            print(f"  stopped the worker and the target; deleted queue {queue}")
        finally:
            signal.signal(signal.SIGINT, previous)
