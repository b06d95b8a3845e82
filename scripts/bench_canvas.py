"""Workflow benchmark (issue 18): a chord of N no-op members with a trivial body, a chain of M
no-op steps, and the plain drain of N no-op tasks with results, greenq beside Celery in the same
run, against one redis-server started here on a free port.

    python scripts/bench_canvas.py [--members 10000] [--steps 1000] [--repeats 3] [-c 100]

Each figure is from the producer's call to the final result (enqueue included), with a gevent
worker of the same concurrency already running; the median of the repeats is printed, with
greenq's chord rate as a share of its own drain rate and each greenq/Celery ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def log(text: str) -> None:
    print(f"[bench_canvas {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Worker:
    """A worker subprocess whose output is watched for its ready line."""

    def __init__(self, framework: str, url: str, concurrency: int) -> None:
        env = {**os.environ, "BENCH_FRAMEWORK": framework, "BENCH_REDIS_URL": url, "PYTHONPATH": str(HERE)}
        if framework == "greenq":
            argv = [
                sys.executable,
                "-m",
                "greenq",
                "worker",
                "-A",
                "bench_canvas_tasks",
                "-c",
                str(concurrency),
            ]
            argv += ["-Q", "canvas", "-l", "INFO", "--pool", "gevent"]
            env["GREENQ_WORKER_CPU_WORKERS"] = "0"
            self.ready = "worker ready"
        else:
            argv = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench_canvas_tasks:celery",
                "worker",
                "-P",
                "gevent",
            ]
            argv += [
                "-c",
                str(concurrency),
                "-Q",
                "canvas",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ]
            argv += ["--without-heartbeat"]
            self.ready = "ready."
        self.proc = subprocess.Popen(
            argv, env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.seen = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.seen.wait(60):
            self.stop()
            raise SystemExit(f"{framework} worker did not start:\n{''.join(self.lines[-20:])}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.ready in line:
                self.seen.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def run_greenq(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    os.environ["BENCH_FRAMEWORK"] = "greenq"
    os.environ["BENCH_REDIS_URL"] = url
    import bench_canvas_tasks as tasks

    from greenq import GroupResult, chain, chord

    app, noop, total = tasks.app, tasks.noop, tasks.total
    times: dict[str, list[float]] = {"drain": [], "chord": [], "chain": []}
    worker = Worker("greenq", url, args.concurrency)
    try:
        noop.delay().get(timeout=30)  # warm: connections and scripts loaded
        for repeat in range(args.repeats):
            started = time.perf_counter()
            results = noop.map([()] * args.members)
            GroupResult("drain", results, app=app).get(timeout=600)
            times["drain"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert chord(noop.s() for _ in range(args.members))(total.s()).get(timeout=600) == args.members
            times["chord"].append(time.perf_counter() - started)
            started = time.perf_counter()
            chain(noop.s(), *(noop.si() for _ in range(args.steps - 1)))().get(timeout=600)
            times["chain"].append(time.perf_counter() - started)
            log(f"greenq repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
            app.broker.client.flushall()
    finally:
        worker.stop()
    return times


def run_celery(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    code = f"""
import json, os, sys, time
os.environ["BENCH_FRAMEWORK"] = "celery"
os.environ["BENCH_REDIS_URL"] = {url!r}
sys.path.insert(0, {str(HERE)!r})
from celery import chain, chord
from celery.result import ResultSet
import bench_canvas_tasks as tasks
times = {{"drain": [], "chord": [], "chain": []}}
tasks.noop.delay().get(timeout=30)
for repeat in range({args.repeats}):
    started = time.perf_counter()
    ResultSet([tasks.noop.delay() for _ in range({args.members})]).join_native(timeout=900)
    times["drain"].append(time.perf_counter() - started)
    print("celery drain", round(times["drain"][-1], 2), file=sys.stderr, flush=True)
    started = time.perf_counter()
    body = chord(tasks.noop.s() for _ in range({args.members}))(tasks.total.s())
    assert body.get(timeout=900) == {args.members}
    times["chord"].append(time.perf_counter() - started)
    started = time.perf_counter()
    chain(tasks.noop.s(), *(tasks.noop.si() for _ in range({args.steps} - 1)))().get(timeout=900)
    times["chain"].append(time.perf_counter() - started)
    done = {{k: round(v[-1], 2) for k, v in times.items()}}
    print("celery repeat", repeat + 1, done, file=sys.stderr, flush=True)
print(json.dumps(times))
"""
    import json

    worker = Worker("celery", url, args.concurrency)
    try:
        env = {**os.environ, "BENCH_FRAMEWORK": "celery", "BENCH_REDIS_URL": url}
        argv = [sys.executable, "-c", code]
        out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, timeout=3600)
        if out.returncode != 0:
            raise SystemExit(f"celery run failed ({out.returncode})")
        times: dict[str, list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
        return times
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=100)
    parser.add_argument("--skip-celery", action="store_true")
    args = parser.parse_args(argv)
    from greenq.embedded import RedisServer, bundled_binary, system_binary

    binary = system_binary() or bundled_binary()
    server = RedisServer(binary).start()
    try:
        log(f"redis-server {binary} at {server.url}")
        figures: dict[str, dict[str, list[float]]] = {"greenq": run_greenq(server.url, args)}
        if not args.skip_celery:
            import redis

            redis.Redis.from_url(server.url).flushall()
            figures["celery"] = run_celery(server.url, args)
    finally:
        server.stop()
    report(figures, args)
    return 0


def report(figures: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    med = {fw: {k: statistics.median(v) for k, v in rows.items()} for fw, rows in figures.items()}
    counts = {"drain": args.members, "chord": args.members, "chain": args.steps}
    names = {
        "drain": f"drain {args.members:,} no-op tasks, results on",
        "chord": f"chord of {args.members:,} no-op members + body",
        "chain": f"chain of {args.steps:,} no-op steps",
    }
    frameworks = list(med)
    print(
        f"\n| workload (median of {args.repeats}, -c {args.concurrency}) | "
        + " | ".join(frameworks)
        + " | ratio |"
    )
    print("|---|" + "---|" * (len(frameworks) + 1))
    for key in ("drain", "chord", "chain"):
        cells = [f"{med[fw][key]:.2f} s ({counts[key] / med[fw][key]:,.0f}/s)" for fw in frameworks]
        ratio = f"{med['celery'][key] / med['greenq'][key]:.1f}x" if "celery" in med else "-"
        print(f"| {names[key]} | " + " | ".join(cells) + f" | {ratio} |")
    share = med["greenq"]["drain"] / med["greenq"]["chord"]
    print(f"\ngreenq chord rate / greenq drain rate: {share:.0%} (target >= 80%)")


if __name__ == "__main__":
    raise SystemExit(main())
