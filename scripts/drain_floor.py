#!/usr/bin/env python
"""The drain's floor: what a queue with none of greenq's semantics reaches of the INCR ceiling.

    python scripts/drain_floor.py [--tasks 30000] [--repeats 3]

Three ways to make ``--tasks`` calls of the drain's body (``bench_tasks.incr``: one redis-py
INCR), from 500 greenlets in a gevent-patched process, each on its own redis-server (the bundled
binary, a free port, stopped by PID), interleaved ``--repeats`` times:

- **ceiling**: the body called in a loop, no queue (``bench_tasks.py ceiling``, as bench.py);
- **bare loop**: the least a Redis-streams queue with results must do per task, and nothing
  else (``BareLoop`` below): read entries with XREADGROUP, parse the JSON, hand each to an
  idle greenlet, call the body, write a result record with its TTL and XACK, one MULTI per
  round. No revocation or expiry check, no recovery fence, no validation, no request context,
  counters, time limits, workflows or flow control;
- **greenq**: ``greenq worker -c 500`` on the same pre-filled queue.

Each is timed from its first call to its last (start-up excluded: ``scripts/bench.py`` and
``scripts/bench_startup.py`` measure that); the table gives calls per second, CPU per call, and
the share of the ceiling. Issue 25 asked ≥ 90 % of the ceiling for the drain: the bare loop
shows what that demands of the per-task path (docs/benchmarks.md, "What bounds each workload").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
STREAM = "greenq:{q:bench}:stream"  # queue "bench", priority 0: where the fill puts every task
GROUP = "greenq"
CONCURRENCY = 500
TIMEOUT_S = 600
KINDS = ("ceiling", "bare loop", "greenq")
MIN_TASKS = 2_000


class BareLoop:
    """The least a Redis-streams queue with results does per task (see the module's docstring)."""

    def __init__(self, url: str, n: int) -> None:
        import bench_tasks
        from gevent.event import Event

        from greenq.broker.stack import Link

        self.n = n
        self.bodies = {f"bench.{name}": function for name, (function, _) in bench_tasks.BODIES.items()}
        self.reader, self.writer = Link(url, 5.0, 30.0), Link(url, 5.0, 30.0)
        self.pending: deque[tuple[bytes, dict[str, Any]]] = deque()
        self.idle: list[Any] = []  # Waiters of idle worker greenlets
        self.outbox: list[tuple[bytes, str, bytes]] = []
        self.written = self.in_flight = 0
        self.wake, self.room, self.finished = Event(), Event(), Event()
        self.failure: BaseException | None = None

    def work(self) -> None:
        import orjson
        from gevent.hub import Waiter

        waiter = Waiter()
        while True:
            if self.pending:
                entry_id, message = self.pending.popleft()
            else:
                self.idle.append(waiter)
                entry_id, message = waiter.get()
            value = self.bodies[message["task"]](*message["args"], **message["kwargs"])
            record = {"id": message["id"], "task": message["task"], "state": "SUCCESS", "result": value}
            record["date_done"] = time.time()
            self.outbox.append((entry_id, message["id"], orjson.dumps(record)))
            self.wake.set()

    def hand_out(self) -> None:
        """In the hub: a ``Waiter`` is switched to from there only."""
        while self.pending and self.idle:
            self.idle.pop().switch(self.pending.popleft())

    def fetch(self) -> None:
        import gevent
        import orjson

        prefetch = 4 * CONCURRENCY  # the worker's default: prefetch_multiplier 4
        while self.written < self.n:
            while self.in_flight > prefetch - CONCURRENCY:
                self.room.clear()
                self.room.wait(1.0)
            reply = self.reader.call(
                "XREADGROUP", "GROUP", GROUP, "bare", "COUNT", prefetch - self.in_flight,
                "BLOCK", 50, "STREAMS", STREAM, ">",
            )  # fmt: skip
            for entry_id, fields in reply[0][1] if reply else ():
                self.pending.append((entry_id, orjson.loads(fields[1])))
                self.in_flight += 1
            if self.pending and self.idle:
                gevent.get_hub().loop.run_callback(self.hand_out)
            gevent.sleep(0)

    def flush(self) -> None:
        while self.written < self.n:
            self.wake.wait(1.0)
            self.wake.clear()
            batch, self.outbox = self.outbox, []
            if not batch:
                continue
            commands: list[tuple[Any, ...]] = [
                ("SET", f"greenq:result:{{{task_id}}}", record, "PX", 86_400_000)
                for _, task_id, record in batch
            ]
            commands.append(("XACK", STREAM, GROUP, *[entry_id for entry_id, _, _ in batch]))
            self.writer.transaction(commands)
            self.written += len(batch)
            self.in_flight -= len(batch)
            self.room.set()
        self.finished.set()

    def _failed(self, greenlet: Any) -> None:
        self.failure = greenlet.exception
        self.finished.set()

    def run(self) -> dict[str, float]:
        """Drain the ``n`` pre-filled tasks; timings as a ceiling reports them."""
        import bench_tasks
        import gevent

        from greenq.broker.stack import cache_redis_lib_version

        bench_tasks.tune_gc()  # as the worker and the ceiling do
        cache_redis_lib_version()
        self.reader.call("XGROUP", "CREATE", STREAM, GROUP, "0", "MKSTREAM")
        workers = [gevent.spawn(self.work) for _ in range(CONCURRENCY)]
        gevent.sleep(0)  # every worker greenlet waits idle before the clock starts
        started, began, cpu = time.perf_counter(), time.monotonic(), time.process_time()
        loops = [gevent.spawn(self.fetch), gevent.spawn(self.flush)]
        for greenlet in workers + loops:
            greenlet.link_exception(self._failed)
        if not self.finished.wait(TIMEOUT_S):
            raise RuntimeError(f"the bare loop wrote {self.written:,} of {self.n:,} results in {TIMEOUT_S} s")
        if self.failure is not None:
            raise self.failure
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        gevent.killall(workers + loops)
        return {"n": self.n, "elapsed_s": elapsed, "cpu_s": cpu, "started": began, "ended": time.monotonic()}


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "BENCH_FRAMEWORK": "greenq",
        "BENCH_REDIS_URL": url,
        "GREENQ_BROKER_URL": url,
    }


def _fill(url: str, n: int) -> None:
    import bench_tasks

    app = bench_tasks.make_greenq_app(url)
    for start in range(0, n, 10_000):
        app.tasks["bench.incr"].map([()] * min(10_000, n - start))
    app.close()


def _timed_child(argv: list[str], url: str) -> tuple[float, float]:
    """(seconds, CPU seconds) a child reports on its last stdout line (the ceiling's JSON)."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=SCRIPTS, env=_env(url), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["elapsed_s"], report["cpu_s"]


def _timed_worker(url: str, n: int) -> tuple[float, float]:
    """A greenq worker on the filled queue, from its first task taken to the last acked."""
    import redis
    from bench_tasks import process_cpu_s

    argv = [
        "-m",
        "greenq",
        "worker",
        "-A",
        "bench_tasks",
        "-c",
        str(CONCURRENCY),
        "-Q",
        "bench",
        "-l",
        "WARNING",
    ]
    worker = subprocess.Popen([sys.executable, *argv], cwd=SCRIPTS, env=_env(url))
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while client.xlen(STREAM) == n:  # its first batch starts: early acks delete entries
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker took no task")
            time.sleep(0.002)
        started, cpu = time.perf_counter(), process_cpu_s(worker.pid)
        while client.xlen(STREAM) or client.xpending(STREAM, GROUP)["pending"]:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not drain {n:,} tasks")
            time.sleep(0.002)
        return time.perf_counter() - started, process_cpu_s(worker.pid) - cpu
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def one_run(kind: str, n: int) -> tuple[float, float]:
    from greenq.embedded import RedisServer, bundled_binary, free_port

    server = RedisServer(bundled_binary(), port=free_port(), data_dir=tempfile.mkdtemp()).start()
    try:
        if kind == "ceiling":
            argv = ["bench_tasks.py", "ceiling", "incr", "-", str(n), str(CONCURRENCY)]
            timings = _timed_child(argv, server.url)
        else:
            _fill(server.url, n)
            if kind == "bare loop":
                argv = [str(Path(__file__).resolve()), "--loop", server.url, str(n)]
                timings = _timed_child(argv, server.url)
            else:
                timings = _timed_worker(server.url, n)
        _check(kind, server.url, n)
        return timings
    finally:
        server.stop()


def _check(kind: str, url: str, n: int) -> None:
    """Every call ran once, and each queue wrote one result record per task: a loop that lost or
    skipped work would look faster than it is."""
    import redis
    from bench_tasks import COUNTER

    client = redis.Redis.from_url(url)
    calls = int(client.get(COUNTER) or 0)
    results = sum(1 for _ in client.scan_iter("greenq:result:*", count=10_000))
    if calls != n or results != (0 if kind == "ceiling" else n):
        raise RuntimeError(f"{kind}: {calls:,} calls and {results:,} results for {n:,} tasks")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.loop and args.tasks < MIN_TASKS:  # the worker is timed by polling its queue
        parser.error(f"--tasks must be at least {MIN_TASKS:,}: fewer drain within a few polls")
    sys.path[:0] = [str(ROOT), str(SCRIPTS)]
    if args.loop:
        from greenq.pools.gevent import patch

        patch()  # as a worker and the ceiling patch, before anything else is imported
        print(json.dumps(BareLoop(args.loop[0], int(args.loop[1])).run()), flush=True)
        return 0
    runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for repeat in range(1, args.repeats + 1):
        for kind in KINDS:
            elapsed, cpu = one_run(kind, args.tasks)
            runs[kind].append((elapsed, cpu))
            print(
                f"{repeat}/{args.repeats} {kind:>9}: {args.tasks / elapsed:,.0f} calls/s, "
                f"{cpu / args.tasks * 1e6:.0f} us CPU each",
                flush=True,
            )
    ceiling = statistics.median(args.tasks / elapsed for elapsed, _ in runs["ceiling"])
    print(f"medians of {args.repeats}, {args.tasks:,} calls each:")
    for kind in KINDS:
        rate = statistics.median(args.tasks / elapsed for elapsed, _ in runs[kind])
        cpu_us = statistics.median(cpu / args.tasks * 1e6 for _, cpu in runs[kind])
        print(
            f"  {kind:>9}: {rate:,.0f} calls/s, {cpu_us:.0f} us CPU each, {rate / ceiling:.0%} of the ceiling"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
