#!/usr/bin/env python
"""End-to-end latency of ``task.delay().get()`` at light load, and where the time goes (issue 7).

    python scripts/latency_probe.py [--rate 100] [--seconds 5] [--repeats 3] [--closed 1000]
                                    [--trace 3] [--drain 20000] [--pool gevent] [-c 500] [--redis PATH]

Starts its own redis-server (greenq.embedded, on a free port) and one ``greenq worker`` subprocess
importing the greenq of this repository (PYTHONPATH), on the bench tasks (scripts/bench_tasks.py).
Each repeat sends ``rate x seconds`` echo tasks open loop from 32 threads and prints p50/p90/p99,
the worker's and Redis's CPU per task, their voluntary context switches per task (how often each
went to sleep waiting: every wake-up costs time on this kind of VM) and the Redis commands per
task (INFO commandstats, which also counts the commands scripts run). ``--closed N`` then sends
N tasks back to back from one thread. ``--trace N`` then sends N tasks one at a time under
MONITOR and prints the first one's commands, per connection, with the server's clock relative
to the producer's XADD, and the median times of the critical path's round trips. ``--drain N``
also times a worker draining N prefilled INCR tasks (from its start, as bench.py does, and from
its first task).
Every child is stopped by PID; the whole run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import redis

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path[:0] = [str(ROOT), str(SCRIPTS)]

import bench_tasks as tasks  # noqa: E402

from greenq.broker.keys import Keys  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary, find_binary  # noqa: E402


def cpu_s(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])
    return 0.0


def switches(pid: int | None) -> int:
    """Voluntary context switches: how often the process went to sleep (waiting for I/O)."""
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).num_ctx_switches().voluntary)
    return 0


def command_stats(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}


def redis_cpu(r: redis.Redis) -> float:
    return sum(float(v) for k, v in r.info("cpu").items() if k in ("used_cpu_user", "used_cpu_sys"))


class Worker:
    def __init__(self, url: str, args: argparse.Namespace, log_dir: Path) -> None:
        env = dict(
            os.environ,
            BENCH_FRAMEWORK="greenq",
            BENCH_REDIS_URL=url,
            GREENQ_BROKER_URL=url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        command = ["-m", "greenq", "worker", "-A", args.app, "--pool", args.pool, "-c", str(args.concurrency)]
        command += ["-Q", tasks.QUEUE, "-l", "WARNING"]
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *command], env=env, cwd=SCRIPTS, stdout=out, stderr=subprocess.STDOUT
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"worker exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def latency_run(url: str, args: argparse.Namespace, log_dir: Path, server_pid: int | None) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    r.flushall()
    app = tasks.make_greenq_app(url)
    echo = app.tasks["bench.echo"]
    worker = Worker(url, args, log_dir)
    count = int(args.rate * args.seconds)

    before: dict[str, Any] = {}
    after: dict[str, Any] = {}

    @contextlib.contextmanager
    def measured() -> Iterator[None]:
        """Command counts, CPU and context switches over the timed part only."""
        before.update(stats=command_stats(r), rcpu=redis_cpu(r), wcpu=cpu_s(worker.proc.pid))
        before.update(wsw=switches(worker.proc.pid), rsw=switches(server_pid))
        yield
        after.update(wcpu=cpu_s(worker.proc.pid), rcpu=redis_cpu(r), stats=command_stats(r))
        after.update(wsw=switches(worker.proc.pid), rsw=switches(server_pid))

    try:
        echo.delay().get(timeout=60)  # the worker is up and consuming
        samples = tasks.open_loop_ms(echo, args.rate, count, measured)
        worker.check()
        # back to back, one producer thread
        closed = sorted(tasks.round_trip_ms(echo) for _ in range(args.closed))
        traces = [trace_one(url, echo, r) for _ in range(args.trace)]
    finally:
        worker.stop()
        app.close()
    cuts = statistics.quantiles(samples, n=100)
    stats0, stats1 = before["stats"], after["stats"]
    per_task = {k: (v - stats0.get(k, 0)) / count for k, v in stats1.items() if v != stats0.get(k, 0)}
    per_task.pop("info", None)
    return {
        "p50": cuts[49],
        "p90": cuts[89],
        "p99": cuts[98],
        "max": max(samples),
        "worker_cpu_ms": (after["wcpu"] - before["wcpu"]) / count * 1000,
        "redis_cpu_ms": (after["rcpu"] - before["rcpu"]) / count * 1000,
        "worker_sleeps": (after["wsw"] - before["wsw"]) / count,
        "redis_sleeps": (after["rsw"] - before["rsw"]) / count,
        "commands": per_task,
        "traces": traces,
        "closed": closed,
    }


# Milestones of a traced task: the first command (not run by a script) matching each prefix.
MILESTONES = {
    "start.lua": '"EVAL" "-- start.lua',
    "results": ('"EVAL" "-- store_results.lua', '"MULTI"'),
    "get() XREAD": '"XREAD" "BLOCK"',
}


def trace_one(url: str, echo: Any, r: redis.Redis) -> tuple[list[str], dict[str, float]]:
    """One task under MONITOR: every command of every connection, server clock relative to the
    XADD; and the offset (ms) of each milestone."""
    lines: list[tuple[float, str, str]] = []
    ready, done = threading.Event(), threading.Event()

    def monitor() -> None:
        conn = redis.Redis.from_url(url).connection_pool.make_connection()
        conn.connect()
        conn.send_command("MONITOR")
        conn.read_response()
        ready.set()
        conn._sock.settimeout(0.2)  # type: ignore[attr-defined]
        while not done.is_set():
            try:
                line = conn.read_response()
            except (redis.TimeoutError, TimeoutError):
                continue
            text = line.decode(errors="replace") if isinstance(line, bytes) else str(line)
            stamp, _, rest = text.partition(" ")
            client, _, command = rest.partition("] ")
            if "MONITOR" not in command:
                lines.append((float(stamp), client.lstrip("["), command[:110]))
        conn.disconnect()

    thread = threading.Thread(target=monitor, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.3)  # let the worker's loops settle into their idle state
    started = time.perf_counter()
    echo.delay().get(timeout=10)
    elapsed_ms = (time.perf_counter() - started) * 1000
    time.sleep(0.05)
    done.set()
    thread.join(5)
    xadd = next((t for t, _, c in lines if c.startswith('"XADD" "greenq:{q:')), None)
    if xadd is None:
        return ["(no XADD seen)"], {}
    out = [f"delay().get() took {elapsed_ms:.2f} ms at the producer"]
    marks = {"get() returned": elapsed_ms}
    for stamp, client, command in lines:
        if xadd - 0.002 <= stamp <= xadd + elapsed_ms / 1000 + 0.002:
            offset = (stamp - xadd) * 1000
            out.append(f"  {offset:+8.3f} ms  {client:28s} {command}")
            for name, prefix in MILESTONES.items():
                if name not in marks and client != "lua" and command.startswith(prefix):
                    marks[name] = offset
    return out, marks


def drain_run(url: str, args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    app = tasks.make_greenq_app(url)
    n = args.drain
    app.tasks["bench.incr"].map([()] * n)
    app.close()
    assert r.xlen(Keys.stream(tasks.QUEUE)) == n
    rcpu0, stats0 = redis_cpu(r), command_stats(r)
    started = time.perf_counter()
    worker = Worker(url, args, log_dir)
    try:
        deadline, first = started + 60 + n / 200, None
        while (done := int(r.get(tasks.COUNTER) or 0)) < n:
            if first is None and done:
                first = (time.perf_counter(), done)
            worker.check()
            if time.perf_counter() > deadline:
                raise RuntimeError("drain not finished in time")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        if first is None:
            first = (time.perf_counter() - 1e-3, 0)
        steady = (n - first[1]) / (time.perf_counter() - first[0])
        wcpu = cpu_s(worker.proc.pid)
    finally:
        worker.stop()
    stats1 = command_stats(r)
    evals = (stats1.get("eval", 0) - stats0.get("eval", 0)) / n
    execs = (stats1.get("exec", 0) - stats0.get("exec", 0)) / n
    return {
        "rate": n / elapsed,
        "steady": steady,
        "worker_cpu_ms": wcpu / n * 1000,
        "redis_cpu_ms": (redis_cpu(r) - rcpu0) / n * 1000,
        "eval_per_task": evals,
        "exec_per_task": execs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="tasks per second (default 100)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per repeat (default 5)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--trace", type=int, default=0, help="tasks to trace with MONITOR after each repeat")
    parser.add_argument("--closed", type=int, default=0, help="then this many back to back from one thread")
    parser.add_argument("--drain", type=int, default=0, help="also drain this many prefilled tasks")
    parser.add_argument("--pool", default="gevent")
    parser.add_argument("-c", "--concurrency", type=int, default=500)
    parser.add_argument("--app", default="bench_tasks", help="worker -A module (default bench_tasks)")
    parser.add_argument("--redis", help="redis-server binary (default: bundled, else the system's)")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="greenq-probe-"))
    server = RedisServer(
        binary=args.redis or bundled_binary() or find_binary(), data_dir=str(log_dir)
    ).start()
    version = redis.Redis.from_url(server.url).info("server")["redis_version"]
    print(f"redis-server {version} pid {server.pid}; worker --pool {args.pool} -c {args.concurrency}")
    try:
        for repeat in range(1, args.repeats + 1):
            if args.seconds > 0:
                run = latency_run(server.url, args, log_dir, server.pid)
                commands = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run["commands"].items()))
                latency = ", ".join(f"{k} {run[k]:.2f} ms" for k in ("p50", "p90", "p99", "max"))
                cpu = f"worker {run['worker_cpu_ms']:.3f} ms, redis {run['redis_cpu_ms']:.3f} ms"
                print(f"[{repeat}] latency at {args.rate:g}/s: {latency}; CPU per task: {cpu}", flush=True)
                if closed := run["closed"]:
                    cuts = statistics.quantiles(closed, n=100) if len(closed) > 1 else closed * 99
                    print(f"    back to back x {len(closed)}: p50 {cuts[49]:.3f} ms, p90 {cuts[89]:.3f} ms")
                sleeps = f"worker {run['worker_sleeps']:.2f}, redis-server {run['redis_sleeps']:.2f}"
                print(f"    voluntary context switches (sleeps) per task: {sleeps}")
                print(f"    redis commands per task: {commands}")
                if run["traces"]:
                    print("\n".join(run["traces"][0][0]))
                    names = [*MILESTONES, "get() returned"]
                    medians = {
                        n: statistics.median(m[n] for _, m in run["traces"] if n in m)
                        for n in names
                        if any(n in m for _, m in run["traces"])
                    }
                    summary = ", ".join(f"{n} {v:+.3f}" for n, v in medians.items())
                    print(f"    median of {len(run['traces'])} traces, ms after the XADD: {summary}")
            if args.drain:
                d = drain_run(server.url, args, log_dir)
                print(
                    f"[{repeat}] drain {args.drain:,}: {d['rate']:,.0f} tasks/s from worker start,"
                    f" {d['steady']:,.0f}/s from its first task; CPU per"
                    f" task: worker {d['worker_cpu_ms']:.3f} ms, redis {d['redis_cpu_ms']:.3f} ms;"
                    f" EVAL {d['eval_per_task']:.3f}, EXEC {d['exec_per_task']:.3f} per task",
                    flush=True,
                )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
