#!/usr/bin/env python
"""greenq against Celery 5.x: same task bodies, same redis-server, one run (DESIGN.md §6, issues 7, 9).

    python scripts/bench.py [--quick] [--repeats 3] [--only drain,noop,...] [--out docs/benchmarks.md]

Workloads (WORKLOADS): both frameworks run drain, noop, http, enqueue, latency, cpu. greenq alone
runs drain_app (INCR through app.redis), http_client (greenq.http), http_session
(greenq.http.requests_session()) and http_procs (--processes 2): Celery has no such clients, so
its cells say why they are empty. "ceiling" runs are the same task bodies (the very functions)
called with no queue, run next to the worker in each repeat; each row with a ceiling also prints
the queue's throughput as a share of it, from the first task (against the ceiling from its first
call) and including start-up (from the spawn of each process), paired repeat by repeat.

Starts a redis-server (greenq.embedded, bundled binary) and the HTTP target (greenq.demo.target) on
127.0.0.1; runs each workload --repeats times per framework, interleaved, FLUSHALL between runs, on
a copy of greenq/ frozen at the start; writes the table and a chart between the bench:begin/end
markers of --out. Children are time-bounded and stopped by PID. On a shared machine a run waits
for quiet and is repeated if others took the CPU. Task bodies, ceilings: scripts/bench_tasks.py.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import bench_tasks as tasks
import psutil
import redis

from greenq.broker.keys import Keys
from greenq.embedded import RedisServer, bundled_binary, free_port

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
FRAMEWORKS = ("greenq", "celery")
# workload -> who runs it, in this order per repeat; "ceiling" = the same work without a queue,
# run right after greenq's run: a share pairs the two, and this host's speed drifts over the
# minute a Celery run takes (the ceiling swung 5,500-7,900/s between repeats minutes apart)
WORKLOADS: dict[str, tuple[str, ...]] = {
    "drain": ("greenq", "ceiling", "celery"),
    "drain_app": ("greenq", "ceiling"),
    "noop": FRAMEWORKS,
    "http": ("greenq", "ceiling", "celery"),
    "http_client": ("greenq", "ceiling"),
    "http_session": ("greenq", "ceiling"),
    "http_procs": ("greenq", "ceiling"),
    "enqueue": ("greenq", "ceiling", "celery"),
    "latency": FRAMEWORKS,
    "cpu": FRAMEWORKS,
}
STARTUP_FROM = ("drain", "noop", "http")  # the runs whose worker start-up makes the start-up row
CONCURRENCY, HTTP_DELAY_MS, CPU_TASK_S, PIPELINE = 500, 100, 0.05, 1_000
FIRST_POLL_S, DONE_POLL_S = 0.002, 0.01  # first task taken off the queue; all done
FULL = {"drain": 20_000, "noop": 20_000, "http": 10_000, "http_procs": 20_000, "enqueue": 20_000}
FULL |= {"latency_s": 5, "cpu": 200}
QUICK = {"drain": 2_000, "noop": 2_000, "http": 1_000, "http_procs": 2_000, "enqueue": 2_000}
QUICK |= {"latency_s": 2, "cpu": 20}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
STARTED = time.monotonic()
LOG_DIR = Path(tempfile.gettempdir())  # main() makes a fresh one: child logs, redis data dir
LIVE: list[Any] = []  # children still running
SEEN: dict[int, float] = {}  # pid -> CPU seconds last seen, for this process and its descendants
EXPECTED = (RuntimeError, AssertionError, redis.RedisError, subprocess.SubprocessError)  # a run failed

# key -> (row label, unit, higher is better, chart label or ""). Worker runs are timed from the
# first task taken off the queue to the last one done; "incl. start-up" rows from the spawn.
METRICS: dict[str, tuple[str, str, bool, str]] = {
    "startup": ("worker start-up: spawn → first task taken (drain, noop, http runs)", "s", False, ""),
    "first_done_drain": ("worker start-up: spawn → first task done (drain: INCR)", "s", False, "start-up"),
    "first_done_http": ("worker start-up: spawn → first task done (http: requests GET)", "s", False, ""),
    "drain": ("drain: {drain:,} x INCR, results on, -c 500", "tasks/s", True, "drain"),
    "drain_spawn": ("drain incl. start-up (from the spawn)", "tasks/s", True, ""),
    "drain_app": ("drain: {drain:,} x INCR via app.redis, -c 500 (target ≥ 8,000/s)", "tasks/s", True, ""),
    "noop": ("noop: {noop:,} x no-op, results off, -c 500", "tasks/s", True, "noop"),
    "noop_spawn": ("noop incl. start-up (from the spawn)", "tasks/s", True, ""),
    "http_s": ("http: {http:,} x GET /delay/100, -c 500, requests", "s", False, "http (time)"),
    "http_spawn_s": ("http incl. start-up (from the spawn)", "s", False, ""),
    "http_eff": ("http efficiency (ideal {ideal:.1f} s / actual)", "", True, ""),
    "http_rss": ("peak RSS of the worker during http (requests in the task)", "MB", False, "peak RSS"),
    "http_client_rss": ("peak RSS of the worker, http through greenq.http (target ≤ 60)", "MB", False, ""),
    "http_client_s": ("http: {http:,} x GET, greenq.http, -c 500 (target, 10,000: ≤ 2.6 s)", "s", False, ""),
    "http_client_spawn_s": ("http through greenq.http incl. start-up (from the spawn)", "s", False, ""),
    "http_session_s": ("http: {http:,} x GET, greenq.http.requests_session(), -c 500", "s", False, ""),
    "http_procs_s": ("http: {http_procs:,} x GET, greenq.http, --processes 2 x -c 500", "s", False, ""),
    "enqueue": ("enqueue: {enqueue:,} single delay() calls", "tasks/s", True, "enqueue (single)"),
    "enqueue_batch": ("enqueue: {enqueue:,} batch (greenq task.map)", "tasks/s", True, ""),
    "lat_p50": ("latency delay()→get() p50 at 100 tasks/s", "ms", False, "latency p50"),
    "lat_p99": ("latency delay()→get() p99 at 100 tasks/s", "ms", False, "latency p99"),
    "cpu_prefork": ("cpu: {cpu} x ~50 ms, prefork -c {cores}, efficiency", "", True, "cpu (prefork)"),
    "cpu_hybrid": ("cpu: {cpu} x ~50 ms, hybrid (gevent + cpu=True), efficiency", "", True, ""),
    "drain_cpu": ("worker CPU per task, drain", "ms", False, ""),
    "drain_app_cpu": ("worker CPU per task, drain through app.redis", "ms", False, ""),
    "noop_cpu": ("worker CPU per task, noop", "ms", False, ""),
    "http_cpu": ("worker CPU per task, http (requests)", "ms", False, ""),
    "http_client_cpu": ("worker CPU per task, http through greenq.http", "ms", False, ""),
    "http_session_cpu": ("worker CPU per task, http through requests_session()", "ms", False, ""),
    "drain_rcpu": ("redis-server CPU per task, drain", "ms", False, ""),
    "http_rcpu": ("redis-server CPU per task, http", "ms", False, ""),
}
# ceiling key -> (what it is, [(measured key, share row label)]): the rows after the table body.
# Each ceiling calls the very function the compared tasks run (bench_tasks.CEILING_KINDS).
SHARE = "as a share of that ceiling"
CEILINGS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "ceiling_http": (
        "the http body (requests.Session GET) from 500 greenlets, no queue",
        [("http_rate", f"http {SHARE} (target ≥ 90 % incl. start-up)")],
    ),
    "ceiling_session": (
        "the requests_session() body from 500 greenlets, no queue",
        [("http_session_rate", f"http through requests_session() {SHARE} (target ≥ 85 %)")],
    ),
    "ceiling_ghttp": (
        "the greenq.http body from 500 greenlets, no queue",
        [("http_client_rate", f"http through greenq.http {SHARE} (target ≥ 95 % incl. start-up)")],
    ),
    "ceiling_ghttp2": (
        "the greenq.http body, 2 processes x 500 greenlets in parallel, no queue",
        [("http_procs_rate", f"http --processes 2 {SHARE} (target ≥ 85 %)")],
    ),
    "ceiling_incr": (
        "the drain body (redis-py INCR) from 500 greenlets, no queue",
        [("drain", f"drain {SHARE} (target ≥ 90 % incl. start-up)")],
    ),
    "ceiling_incr_app": (
        "the app.redis INCR body from 500 greenlets (multiplexed under gevent), no queue",
        [("drain_app", f"drain through app.redis {SHARE}")],
    ),
    "ceiling_xadd": (
        "raw XADD of a greenq message, one redis-py Connection, one at a time",
        [("enqueue", f"enqueue single {SHARE}")],
    ),
    "ceiling_xadd_pipe": (
        "raw XADD of a greenq message, one Connection, 1,000 per round trip",
        [("enqueue_batch", f"enqueue batch {SHARE}")],
    ),
}
TIMING = """Worker rows (drain, noop, http and the greenq-only http/drain rows) are timed from the first \
task taken off the queue (the backlog drops below the pre-filled count, polled every 2 ms) to the \
last one done (polled every 10 ms); "worker start-up" is the spawn to that first task taken, or to \
the first task done (the counter moves, or a result exists; polled every 2 ms), and the \
"incl. start-up" rows count from the spawn. Worker CPU per task counts from the first task too. \
Ceilings run the same task function with no queue, next to the worker runs of each repeat, in a \
gevent-patched process with the worker's GC setting and redis-py version lookup cached once, as \
in every greenq process: "from the first call" is timed inside it \
(two processes: over their common span), "from the spawn" from its spawn to its last reply. Each \
share pairs a worker run with the ceiling run of the same repeat (median of the pairs): from the \
first task against from the first call, and from the spawn against from the spawn. The producer \
ceilings run in the bench process, like enqueue."""


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def spawn(args: list[str], env: dict[str, str], name: str) -> Any:
    """A child run in scripts/ (for bench_tasks), output to ``proc.log_path``, listed in LIVE."""
    path = LOG_DIR / f"{len(list(LOG_DIR.iterdir())):03d}-{name}.log"
    with open(path, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=SCRIPTS)
    proc.log_path = path  # type: ignore[attr-defined]
    LIVE.append(proc)
    return proc


def stop(proc: Any, grace_s: float = 20.0) -> None:
    """SIGTERM by PID, SIGKILL after ``grace_s``; never by name."""
    track(once=True)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {grace_s:.0f} s; SIGKILL")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    if proc in LIVE:
        LIVE.remove(proc)


def tail(proc: Any, lines: int = 5) -> str:
    return " | ".join(Path(proc.log_path).read_text(errors="replace").strip().splitlines()[-lines:])


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process and its descendants (live, and reaped)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        return sum(sum(p.cpu_times()[:4]) for p in [proc, *proc.children(recursive=True)])
    return 0.0


def track(once: bool = False) -> None:
    """Keep SEEN current (0.2 s): an exited descendant keeps its figure, wherever it was reaped."""
    me = psutil.Process()
    while True:
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                SEEN[p.pid] = sum(p.cpu_times()[:2])
        if once:
            return
        time.sleep(0.2)


def snapshot() -> tuple[float, float, float]:
    """(wall, CPU busy on the whole machine, CPU of this bench and every descendant it had)."""
    track(once=True)
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + sum(getattr(t, f, 0.0) for f in ("irq", "softirq", "steal"))
    return time.monotonic(), busy, sum(SEEN.values())


def other_load(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Share of all cores used by processes outside this bench between two snapshots."""
    wall = max(1e-6, after[0] - before[0]) * (os.cpu_count() or 1)
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall


def wait_quiet(patience_s: float, limit: float = 0.15) -> None:
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        before = snapshot()
        time.sleep(1.0)
        if (load := other_load(before, snapshot())) <= limit:
            return
        log(f"other processes use {load:.0%} of the machine; waiting for quiet")


# ---- the workloads -------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, server: RedisServer) -> None:
        self.args, self.url, self.target, self.delay_url = args, server.url, "", ""
        self.sizes, self.cores = QUICK if args.quick else FULL, os.cpu_count() or 1
        self.r = redis.Redis.from_url(self.url)
        self.values: dict[tuple[str, str], list[float]] = defaultdict(list)  # (key, framework)
        self.notes: dict[tuple[str, str], str] = {}  # (key, framework): why there is no figure
        self.loads: dict[str, list[float]] = defaultdict(list)  # workload: other processes' CPU share
        self.failures, self.open_apps, self.pending = [], [], []  # type: ignore[var-annotated]
        self.loops, self.task_s = 0, CPU_TASK_S

    def env(self, framework: str | None, hybrid: bool = False) -> dict[str, str]:
        extra = {"BENCH_FRAMEWORK": framework or "", "BENCH_HYBRID": "1" if hybrid else ""}
        return dict(os.environ, BENCH_REDIS_URL=self.url, GREENQ_BROKER_URL=self.url, **extra)

    def record(self, key: str, framework: str, value: float) -> None:
        self.pending.append((key, framework, value))

    def run(self, workload: str, framework: str, label: str) -> None:
        """One repeat, run up to 3 times while others take > 30 % of the CPU; keeps the least disturbed."""
        kept: tuple[float, list[tuple[str, str, float]]] = (2.0, [])
        for attempt in range(3):
            self.r.flushall()
            wait_quiet(patience_s=0 if self.args.quick else 180)
            before, self.pending = snapshot(), []
            try:
                summary = getattr(self, workload)(framework)
            except EXPECTED as exc:
                summary, self.pending = f"FAILED: {exc}", []
                self.failures.append(f"{label}: {exc}")
            finally:
                self.finish()
            load = other_load(before, snapshot())
            kept = min(kept, (load, self.pending), key=lambda k: k[0]) if self.pending else kept
            again = load > 0.3 and not self.args.quick and attempt < 2 and bool(self.pending)
            log(f"{label}: {summary} [other processes: {load:.0%} of the machine]{' - again' * again}")
            if not again:
                break
        for key, fw, value in kept[1]:
            self.values[key, fw].append(value)
        self.loads[workload].append(kept[0] if kept[1] else load)

    def apps(self, framework: str, hybrid: bool = False) -> Any:
        """A fresh producer app per run: no caches survive a FLUSHALL (kombu's declared queues)."""
        app = (
            tasks.make_greenq_app(self.url, hybrid)
            if framework == "greenq"
            else tasks.make_celery_app(self.url)
        )
        self.open_apps.append(app)
        return app

    def prefill(self, framework: str, name: str, args: list[tuple[Any, ...]]) -> list[str]:
        app = self.apps(framework, hybrid=name == "burn_cpu")
        task = app.tasks[f"bench.{name}"]
        if framework == "greenq":
            return [result.id for result in task.map(args)]
        with app.producer_or_acquire() as producer:
            return [task.apply_async(a, producer=producer).id for a in args]

    def backlog(self, framework: str) -> int:
        """Not yet given to the pool: greenq XDELs at dispatch; Celery keeps prefetched in ``unacked``."""
        if framework == "greenq":
            return int(self.r.xlen(Keys.stream(tasks.QUEUE)))
        return int(self.r.llen(tasks.QUEUE)) + int(self.r.hlen("unacked"))

    def counter(self) -> int:
        return int(self.r.get(tasks.COUNTER) or 0)

    def redis_cpu(self) -> float:
        return sum(float(v) for k, v in self.r.info("cpu").items() if k in ("used_cpu_user", "used_cpu_sys"))

    def start_worker(
        self, framework: str, pool: str = "gevent", c: int = 0, hybrid: bool = False, processes: int = 1
    ) -> Any:
        if framework == "greenq":
            args = ["-m", "greenq", "worker", "-A", "bench_tasks", "--pool", pool]
            args += ["--processes", str(processes)] if processes > 1 else []
        else:
            args = ["-m", "celery", "-A", "bench_tasks:celery", "worker", "-P", pool]
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        args += ["-c", str(c or CONCURRENCY), "-Q", tasks.QUEUE, "-l", "WARNING"]
        return spawn([sys.executable, *args], self.env(framework, hybrid), f"{framework}-{pool}-{hybrid}")

    def wait(
        self, done: Callable[[], bool], proc: Any, timeout_s: float, what: str, poll_s: float = DONE_POLL_S
    ) -> float:
        """Poll ``done`` every ``poll_s``; the time it became true. Raises if the worker died or timed out."""
        deadline = time.perf_counter() + timeout_s
        while not done():
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: worker exited with {proc.returncode}: {tail(proc)}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{what}: not done after {timeout_s:.0f} s")
            time.sleep(poll_s)
        return time.perf_counter()

    def finish(self) -> None:  # after every run
        while self.open_apps:
            self.open_apps.pop().close()
        self.r.flushall()

    def timed(
        self,
        framework: str,
        key: str,
        n: int,
        done: Callable[[], bool],
        processes: int = 1,
        first_done: Callable[[], bool] | None = None,
    ) -> dict[str, float]:
        """Spawn a worker on the pre-filled queue; marks: the spawn, the first task taken (the
        backlog drops below the prefill, polled every 2 ms), ``first_done`` if given (also every
        2 ms) and ``done``. The throughput window is first taken → done, so the interpreter start
        and imports stay out of it; worker and redis CPU per task are counted over the same window."""
        prefilled, spawned = self.backlog(framework), time.perf_counter()

        def taken() -> bool:  # a worker took the first task: greenq XDELs it, kombu pops it
            return self.backlog(framework) < prefilled

        proc = self.start_worker(framework, processes=processes)
        worker, peak, sampled = psutil.Process(proc.pid), [0], threading.Event()

        def sample_rss() -> None:  # every 50 ms, the worker and its children
            while not sampled.wait(0.05) and proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    procs = [worker, *worker.children(recursive=True)]
                    peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))

        threading.Thread(target=sample_rss, daemon=True).start()
        try:
            first = self.wait(taken, proc, 60, f"{key} start-up", FIRST_POLL_S)
            worker_cpu, redis_cpu = tree_cpu(proc.pid), self.redis_cpu()
            if first_done is not None:
                first_done_at = self.wait(first_done, proc, 60, f"{key} first task", FIRST_POLL_S)
                self.record(f"first_done_{key}", framework, first_done_at - spawned)
            ended = self.wait(done, proc, 60 + n / 20, key)
            worker_cpu = tree_cpu(proc.pid) - worker_cpu
        finally:
            sampled.set()
            stop(proc)
        self.record(f"{key}_cpu", framework, worker_cpu / n * 1000)
        self.record(f"{key}_rcpu", framework, (self.redis_cpu() - redis_cpu) / n * 1000)
        self.record("startup" if key in STARTUP_FROM else f"{key}_startup", framework, first - spawned)
        return {
            "startup": first - spawned,
            "elapsed": ended - first,
            "from_spawn": ended - spawned,
            "rss": peak[0] / 2**20,
        }

    def rates(self, key: str, framework: str, n: int, run: dict[str, float]) -> str:
        """Record the rate over the window and the rate from the spawn; the run's summary line."""
        self.record(key, framework, n / run["elapsed"])
        self.record(f"{key}_spawn", framework, n / run["from_spawn"])
        return (
            f"{n / run['elapsed']:,.0f} tasks/s after a {run['startup']:.2f} s start-up "
            f"({n / run['from_spawn']:,.0f}/s from the spawn)"
        )

    def drain(self, framework: str, key: str = "drain", body: str = "incr") -> str:
        n = self.sizes["drain"]
        if framework == "ceiling":
            return self.ceiling(f"ceiling_{body}", body, "-", n)
        self.prefill(framework, body, [()] * n)
        assert self.backlog(framework) == n, "the prefill did not land in the queue"
        first_done = (lambda: self.counter() >= 1) if key == "drain" else None
        run = self.timed(framework, key, n, lambda: self.counter() >= n, first_done=first_done)
        return self.rates(key, framework, n, run)

    def drain_app(self, framework: str) -> str:
        """drain with the INCR through ``app.redis``; the ceiling: the same body, no worker."""
        if framework == "ceiling":
            return self.drain(framework, "drain_app", "incr_app")
        self.greenq_only("drain_app", "drain_app_cpu", why="no app.redis")
        return self.drain(framework, "drain_app", "incr_app")

    def noop(self, framework: str) -> str:
        n = self.sizes["noop"]
        # An INCR sentinel is fetched last (FIFO): done = it ran and nothing is left queued.
        self.prefill(framework, "noop", [()] * (n - 1))
        self.prefill(framework, "incr", [()])
        run = self.timed(framework, "noop", n, lambda: self.counter() >= 1 and not self.backlog(framework))
        return self.rates("noop", framework, n, run)

    def http_run(self, framework: str, key: str, body: str, n: int, processes: int = 1) -> str:
        """``n`` GETs of /delay/100 through ``body``; done when all ``n`` results exist."""
        ideal = n / (CONCURRENCY * processes) * HTTP_DELAY_MS / 1000
        ids = self.prefill(framework, body, [(self.delay_url,)] * n)
        app = self.apps(framework)
        first = Keys.result(ids[0]) if framework == "greenq" else app.backend.get_key_for_task(ids[0])
        first = first if isinstance(first, str) else first.decode()  # Celery's key is bytes
        probe = self.r.connection_pool.make_connection()
        packed = probe.pack_command("EXISTS", *(first.replace(ids[0], i) for i in ids))  # packed once
        # Any of the first 500 results (a batch starts together; which finishes first is not known)
        some = probe.pack_command("EXISTS", *(first.replace(ids[0], i) for i in ids[:CONCURRENCY]))

        def all_results() -> bool:
            if self.backlog(framework):
                return False
            probe.send_packed_command(packed, check_health=False)
            return int(probe.read_response()) == n

        def first_result() -> bool:
            probe.send_packed_command(some, check_health=False)
            return int(probe.read_response()) > 0

        try:
            first_done = first_result if key == "http" else None
            run = self.timed(framework, key, n, all_results, processes, first_done)
        finally:
            probe.disconnect()
        statuses = {app.AsyncResult(i).get(timeout=10) for i in ids[:: max(1, n // 5)]}
        assert statuses == {200}, f"{key} tasks returned {statuses}"
        elapsed, from_spawn = run["elapsed"], run["from_spawn"]
        figures = {"s": elapsed, "rate": n / elapsed, "eff": ideal / elapsed, "rss": run["rss"]}
        figures |= {"spawn_s": from_spawn, "rate_spawn": n / from_spawn}
        for name, value in figures.items():
            self.record(f"{key}_{name}", framework, value)
        return (
            f"{run['elapsed']:.2f} s after a {run['startup']:.2f} s start-up "
            f"(efficiency {ideal / run['elapsed']:.2f}), RSS {run['rss']:.0f} MB"
        )

    def http(self, framework: str) -> str:
        if framework == "ceiling":
            return self.ceiling("ceiling_http", "fetch", self.delay_url, self.sizes["http"])
        return self.http_run(framework, "http", "fetch", self.sizes["http"])

    def http_client(self, framework: str) -> str:
        """The http workload with the body on greenq.http (issue 9: <= 2.6 s, ideal 2.0 s)."""
        n = self.sizes["http"]
        if framework == "ceiling":
            return self.ceiling("ceiling_ghttp", "fetch_fast", self.delay_url, n)
        self.greenq_only("http_client_s", "http_client_cpu", why="no greenq.http")
        return self.http_run(framework, "http_client", "fetch_fast", n)

    def http_session(self, framework: str) -> str:
        """The http workload through ``greenq.http.requests_session()``."""
        if framework == "ceiling":
            return self.ceiling("ceiling_session", "fetch_session", self.delay_url, self.sizes["http"])
        self.greenq_only("http_session_s", "http_session_cpu", why="no requests_session()")
        return self.http_run(framework, "http_session", "fetch_session", self.sizes["http"])

    def http_procs(self, framework: str) -> str:
        """``--processes 2``, greenq.http body; the ceiling: two raw processes, half the GETs each."""
        n = self.sizes["http_procs"]
        if framework == "ceiling":
            return self.ceiling("ceiling_ghttp2", "fetch_fast", self.delay_url, n, processes=2)
        self.greenq_only("http_procs_s", why="no gevent --processes")
        return self.http_run(framework, "http_procs", "fetch_fast", n, processes=2)

    def greenq_only(self, *keys: str, why: str) -> None:
        """Celery has no equivalent of greenq's own clients: its cells say so instead of a figure."""
        for key in keys:
            self.notes[key, "celery"] = f"— ({why})"

    def ceiling(self, key: str, body: str, arg: str, n: int, processes: int = 1) -> str:
        """``bench_tasks.py ceiling``: the task function ``body`` called ``n / processes`` times from
        500 greenlets in each of ``processes`` gevent children run in parallel. Records the rate
        over their common span from the first call (``key``), from the spawn (``key_spawn``), and
        the ceiling's CPU per call in ms (``key_cpu``)."""
        argv = [sys.executable, str(SCRIPTS / "bench_tasks.py"), "ceiling", body, arg]
        spawned = time.monotonic()
        procs = [
            spawn([*argv, str(n // processes), str(CONCURRENCY)], self.env(None), f"ceiling-{body}")
            for _ in range(processes)
        ]
        deadline = time.monotonic() + 60 + n / 9
        try:  # a TimeoutExpired is a SubprocessError: run() records the failure
            codes = [proc.wait(max(0.1, deadline - time.monotonic())) for proc in procs]
        finally:
            for proc in procs:
                stop(proc)
        if any(codes):
            raise RuntimeError(f"ceiling {body} exited with {codes}: {tail(procs[0])}")
        results = [json.loads(tail(proc, 1)) for proc in procs]
        done, ended = sum(r["n"] for r in results), max(r["ended"] for r in results)
        rate, rate_spawn = done / (ended - min(r["started"] for r in results)), done / (ended - spawned)
        self.record(key, "ceiling", rate)
        self.record(f"{key}_spawn", "ceiling", rate_spawn)
        self.record(f"{key}_cpu", "ceiling", sum(r["cpu_s"] for r in results) / done * 1000)
        return f"{key} {rate:,.0f}/s from the first call, {rate_spawn:,.0f}/s from the spawn"

    def enqueue(self, framework: str) -> str:
        n = self.sizes["enqueue"]
        if framework == "ceiling":
            return self.producer_ceilings(n)
        task = self.apps(framework).tasks["bench.incr"]
        modes = {"enqueue": lambda: [task.delay() for _ in range(n)]}
        if framework == "greenq":
            modes["enqueue_batch"] = lambda: task.map([()] * n)
        else:
            self.notes["enqueue_batch", "celery"] = "no pipelined batch API"
        for key, send in modes.items():
            started = time.perf_counter()
            send()
            rate = n / (time.perf_counter() - started)
            assert self.backlog(framework) == n, f"{key}: {self.backlog(framework)} queued, not {n}"
            self.r.flushall()
            self.record(key, framework, rate)
        return ", ".join(f"{key} {rate:,.0f}/s" for key, _, rate in self.pending)

    def producer_ceilings(self, n: int) -> str:
        """Raw XADDs of a real greenq message (one ``delay()``'s body, read back) on one redis-py
        Connection with the hiredis parser: no pool, no client object, no queue library. One at a
        time is what a single ``delay()`` is compared to; 1,000 per round trip what ``task.map`` is."""
        stream = Keys.stream(tasks.QUEUE)
        self.apps("greenq").tasks["bench.incr"].delay()
        body = self.r.xrange(stream)[0][1][b"m"]
        self.r.flushall()
        conn = self.r.connection_pool.make_connection()
        try:
            for key, per_trip in (("ceiling_xadd", 1), ("ceiling_xadd_pipe", PIPELINE)):
                started = time.perf_counter()
                for start in range(0, n, per_trip):
                    count = min(per_trip, n - start)
                    commands = [("XADD", stream, "*", "m", body)] * count  # each packed, as a producer does
                    conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                    for _ in range(count):
                        conn.read_response()
                self.record(key, "ceiling", n / (time.perf_counter() - started))
                assert self.r.xlen(stream) == n, f"{key}: {self.r.xlen(stream)} in the stream, not {n}"
                self.r.flushall()
        finally:
            conn.disconnect()
        return ", ".join(f"{key} {rate:,.0f}/s" for key, _, rate in self.pending)

    def latency(self, framework: str) -> str:
        task = self.apps(framework).tasks["bench.echo"]
        proc = self.start_worker(framework)
        rate, count = 100, 100 * self.sizes["latency_s"]

        try:
            task.delay().get(timeout=60)  # the worker is up and consuming
            samples = tasks.open_loop_ms(task, rate, count)
        finally:
            stop(proc)
        cuts = statistics.quantiles(samples, n=100)
        self.record("lat_p50", framework, cuts[49])
        self.record("lat_p99", framework, cuts[98])
        return f"p50 {cuts[49]:.2f} ms, p99 {cuts[98]:.2f} ms over {count} tasks"

    def cpu(self, framework: str) -> str:
        self.notes["cpu_hybrid", "celery"] = "no hybrid pool"
        prefork = self.cpu_run(framework, hybrid=False)
        self.finish()
        return f"{prefork}; {self.cpu_run(framework, hybrid=True) if framework == 'greenq' else 'no hybrid'}"

    def cpu_run(self, framework: str, hybrid: bool) -> str:
        """prefork -c cores, or a hybrid gevent worker running ``cpu=True`` tasks in its children."""
        n, name, key, pool, what = self.sizes["cpu"], "burn", "cpu_prefork", "prefork", "prefork"
        if hybrid:
            name, key, pool, what = "burn_cpu", "cpu_hybrid", "gevent", "gevent hybrid"
        proc = self.start_worker(framework, pool, 0 if hybrid else self.cores, hybrid)
        try:
            self.prefill(framework, name, [(0,)])
            try:
                self.wait(lambda: self.counter() >= 1, proc, 60, f"cpu {what} warm-up")
            except RuntimeError:
                if proc.poll() is None:
                    raise
            if proc.poll() is not None or {int(p) for p in self.r.smembers(tasks.PIDS)} == {proc.pid}:
                why = tail(proc, 1)[:80] if proc.poll() is not None else "it ran in the worker process"
                self.notes[key, framework] = f"not yet available: {why}"
                return f"{what}: {self.notes[key, framework]}"
            started = time.perf_counter()
            self.prefill(framework, name, [(self.loops,)] * n)
            ended = self.wait(lambda: self.counter() >= n + 1, proc, 60 + n * CPU_TASK_S * 4, "cpu")
        finally:
            stop(proc)
        work = float(self.r.get(tasks.CPU_S) or 0)  # CPU seconds the bodies used: ideal = work / cores
        self.record(key, framework, efficiency := work / self.cores / (ended - started))
        return f"{what}: {ended - started:.2f} s for {work:.1f} s of task CPU, efficiency {efficiency:.2f}"

    def start_target(self) -> None:
        port, args = free_port(), [sys.executable, "-m", "greenq.demo.target", "--port"]
        proc = spawn([*args, str(port)], self.env(None), "target")
        self.wait(lambda: "listening on" in Path(proc.log_path).read_text(), proc, 30, "HTTP target")
        self.target = f"http://127.0.0.1:{port}"
        self.delay_url = f"{self.target}/delay/{HTTP_DELAY_MS}"

    def calibrate(self) -> None:
        """``loops`` of ``spin`` take CPU_TASK_S of CPU here: the fastest of 5, in process time."""

        def cpu_s(loops: int) -> float:
            started = time.process_time()
            tasks.spin(loops)
            return time.process_time() - started

        self.loops = int(1_000_000 * CPU_TASK_S / min(cpu_s(1_000_000) for _ in range(5)))
        self.task_s = min(cpu_s(self.loops) for _ in range(5))
        log(f"cpu task: spin({self.loops:,}) takes {self.task_s * 1000:.1f} ms of CPU")


# ---- report --------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit.endswith("/s") or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def median(bench: Bench, key: str, framework: str) -> float | None:
    values = bench.values.get((key, framework))
    return statistics.median(values) if values else None


def cell(bench: Bench, key: str, framework: str, unit: str) -> str:
    """Median (min-max), or the note saying why there is no figure."""
    if not (values := bench.values.get((key, framework))):
        return bench.notes.get((key, framework), "—")
    spread = f" ({fmt(min(values), unit)}-{fmt(max(values), unit)})" if len(values) > 1 else ""
    return fmt(statistics.median(values), unit) + spread


def table(bench: Bench) -> tuple[str, list[tuple[str, float]]]:
    """The markdown table, and (label, greenq advantage) pairs for the chart."""
    ideal = bench.sizes["http"] / CONCURRENCY * HTTP_DELAY_MS / 1000
    sizes = dict(bench.sizes, cores=bench.cores, ideal=ideal)
    rows = ["| workload | unit | greenq | Celery | greenq/Celery | better |", "|---|---|--:|--:|--:|:-:|"]
    better, chart = {True: "higher", False: "lower"}, []
    for key, (label, unit, higher, chart_label) in METRICS.items():
        g, c = median(bench, key, "greenq"), median(bench, key, "celery")
        if g is None and c is None and (key, "greenq") not in bench.notes:
            continue
        ratio = f"{g / c:.2f}x" if g is not None and c else "—"
        cells = " | ".join(cell(bench, key, framework, unit) for framework in FRAMEWORKS)
        rows.append(f"| {label.format(**sizes)} | {unit} | {cells} | {ratio} | {better[higher]} |")
        if g and c and chart_label:
            chart.append((chart_label, g / c if higher else c / g))
    rows += ceiling_rows(bench)
    if bench.failures:
        rows.append("\nFailed runs, left out of the figures: " + "; ".join(bench.failures))
    return "\n".join(rows), chart


def share(bench: Bench, measured: str, framework: str, ceiling: str) -> float | None:
    """``measured`` over ``ceiling``: the median of the per-repeat ratios when every repeat has
    both (a worker run and the ceiling run next to it), else the ratio of the medians."""
    rates, ceilings = bench.values.get((measured, framework)), bench.values.get((ceiling, "ceiling"))
    if not rates or not ceilings:
        return None
    if len(rates) == len(ceilings):
        return statistics.median(r / c for r, c in zip(rates, ceilings, strict=True))
    return statistics.median(rates) / statistics.median(ceilings)


def ceiling_rows(bench: Bench) -> list[str]:
    """Each measured ceiling (in the greenq column: from the first call / from the spawn), its CPU
    per call, then the queue's throughput as a share of it in both windows."""
    rows = []
    for key, (label, shares) in CEILINGS.items():
        if median(bench, key, "ceiling") is None:
            continue
        figure = cell(bench, key, "ceiling", "/s")
        if (key + "_spawn", "ceiling") in bench.values:
            figure += f" / {cell(bench, key + '_spawn', 'ceiling', '/s')}"
            label += ": from the first call / from the spawn"
        rows.append(f"| ceiling: {label} | /s | {figure} | | | |")
        if (cpu := median(bench, key + "_cpu", "ceiling")) is not None:
            rows.append(f"| its CPU per call (no queue) | ms | {fmt(cpu, 'ms')} | | | |")
        for measured, name in shares:
            cells = []
            for framework in FRAMEWORKS:
                first = share(bench, measured, framework, key)
                spawn = share(bench, measured + "_spawn", framework, key + "_spawn")
                text = f"{first:.0%}" if first is not None else "—"
                cells.append(text + (f" / {spawn:.0%}" if spawn is not None else ""))
            if any(c != "—" for c in cells):
                windows = ": from the first task / from the spawn" if any(" / " in c for c in cells) else ""
                rows.append(f"| {name}{windows} | | {' | '.join(cells)} | | |")
    return rows


def environment(bench: Bench) -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    found = ", ".join(f"{n} {metadata.version(n)}" for n in ("celery", "kombu", "redis", "hiredis", "gevent"))
    return f"""- Machine: {os.cpu_count()} cores ({model}), {memory}, {platform.platform()}
- Versions: greenq {metadata.version("greenq")} ({os.environ.get("BENCH_SOURCE")}), Python \
{platform.python_version()}, {found}, requests {metadata.version("requests")}, Redis server \
{bench.r.info("server")["redis_version"]} (bundled)"""


def draw_chart(chart: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(chart) + 1.6))
    labels, values = [c[0] for c in chart][::-1], [c[1] for c in chart][::-1]
    colors = ["#2a9d8f" if v >= 1 else "#e76f51" for v in values]
    bars = ax.barh(labels, [v - 1 for v in values], left=1, color=colors)  # from 1x, either way
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(min([*values, 1]) / 1.5, max([*values, 1]) * 2.5)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_xlabel("greenq advantage over Celery (log scale; > 1x: greenq better)")
    for bar, value in zip(bars, values, strict=True):
        ax.text(max(value, 1), bar.get_y() + bar.get_height() / 2, f" {value:.1f}x", va="center")
    ax.set_title("greenq vs Celery 5: gevent -c 500, same Redis, same task bodies")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(bench: Bench, command: str, elapsed_s: float) -> None:
    rows, chart = table(bench)
    print(rows)
    out = Path(bench.args.out or (LOG_DIR if bench.args.quick else ROOT / "docs") / "benchmarks.md")
    image = out.parent / "img" / "benchmarks.png"
    draw_chart(chart, image)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    repeats, image_link = bench.args.repeats, image.relative_to(out.parent).as_posix()
    took, loads = f"{elapsed_s / 60:.1f} min", [v for values in bench.loads.values() for v in values] or [0]
    section = f"""- Command: `{command}` ({repeats} repeat(s): median, with min-max); {date}, took {took}
{environment(bench)}
- Other processes used a median {statistics.median(loads):.0%} (max {max(loads):.0%}) of the machine's CPU
  during the runs (worst run per workload: {", ".join(f"{w} {max(v):.0%}" for w, v in bench.loads.items())})
- What is timed: {TIMING}

{rows}

![greenq advantage over Celery]({image_link})"""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    text = text if BEGIN in text and END in text else f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{BEGIN}\n{section}\n{END}{rest.split(END, 1)[1]}")
    log(f"wrote {out} and {image}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 10x smaller workloads")
    parser.add_argument("--repeats", type=int, help="runs per workload and framework (default 3; quick 1)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(WORKLOADS)} (memory = http)")
    parser.add_argument("--out", help="default docs/benchmarks.md; with --quick, one in the log directory")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    wanted = [w.strip().replace("memory", "http") for w in (args.only or ",".join(WORKLOADS)).split(",")]
    if unknown := set(wanted) - set(WORKLOADS):
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in wanted]
    return args


def freeze_source(argv: list[str]) -> None:
    """Re-run on a compiled copy of greenq/ made now (on PYTHONPATH, for every child): one version."""
    src = Path(tempfile.mkdtemp(prefix="greenq-bench-src-"))
    shutil.copytree(ROOT / "greenq", src / "greenq", ignore=shutil.ignore_patterns("__pycache__"))
    # Byte-compiled as pip compiles an installed package (and Celery is): a worker would otherwise
    # compile every greenq module at each start wherever PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(src / "greenq", quiet=1)
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run([*git, "status", "--porcelain", "greenq"], capture_output=True, text=True).stdout
    source = f"commit {commit.strip()}{' + uncommitted edits' * bool(dirty.strip())}, frozen at the start"
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, BENCH_SOURCE=source)
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, command = parse_args(argv), " ".join(["python scripts/bench.py", *argv])
    if "BENCH_SOURCE" not in os.environ:
        freeze_source(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    threading.Thread(target=track, daemon=True).start()
    global LOG_DIR
    LOG_DIR = Path(tempfile.mkdtemp(prefix="greenq-bench-"))
    server = RedisServer(binary=bundled_binary(), data_dir=tempfile.mkdtemp(dir=LOG_DIR)).start()
    log(f"redis-server pid {server.pid} on {server.url}; child logs in {LOG_DIR}")
    try:
        bench = Bench(args, server)
        bench.start_target()
        log(f"HTTP target {bench.target}; workloads {', '.join(args.workloads)}, {args.repeats} repeat(s)")
        if "cpu" in args.workloads:
            bench.calibrate()
        for workload in args.workloads:
            for repeat in range(1, args.repeats + 1):
                for framework in WORKLOADS[workload]:
                    bench.run(workload, framework, f"{workload} {framework} {repeat}/{args.repeats}")
        report(bench, command, time.monotonic() - STARTED)
    finally:
        while LIVE:
            stop(LIVE[0], grace_s=5.0)
        server.stop()
        log(f"stopped redis-server pid {server.pid} and every child")
    return 0


if __name__ == "__main__":
    sys.exit(main())
