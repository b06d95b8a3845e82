#!/usr/bin/env python
"""greenq against Celery 5.x: same task bodies, same redis-server, one run (DESIGN.md §6, issue 7).

    python scripts/bench.py [--quick] [--repeats 3] [--only drain,noop,...] [--out docs/benchmarks.md]

Starts its own redis-server (greenq.embedded, the bundled binary, a free port) and the local HTTP
target (greenq.demo.target) on 127.0.0.1; runs every workload ``--repeats`` times per framework,
interleaved; FLUSHALLs between runs; prints a progress line per step to stderr and the table to
stdout; writes the table and a chart into ``--out`` (only between the ``bench:begin/end`` markers,
so the hand-written analysis around them survives a rerun). Every child process is bounded in
time and stopped by its PID. Workloads: drain, noop, http (with peak RSS), ceilings, enqueue,
latency, cpu. Task bodies live in ``scripts/bench_tasks.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
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

import bench_tasks
import psutil
import redis

from greenq.broker.redis import Keys
from greenq.embedded import RedisServer, bundled_binary, free_port

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
FRAMEWORKS = ("greenq", "celery")
WORKLOADS = ("drain", "noop", "http", "ceilings", "enqueue", "latency", "cpu")
CONCURRENCY = 500
HTTP_DELAY_MS = 100
CPU_TASK_S = 0.05
FULL = {"drain": 20_000, "noop": 20_000, "http": 10_000, "enqueue": 20_000, "latency_s": 5, "cpu": 200}
QUICK = {"drain": 2_000, "noop": 2_000, "http": 1_000, "enqueue": 2_000, "latency_s": 2, "cpu": 20}
CHART = {
    "drain": "drain (tasks/s)",
    "noop": "noop (tasks/s)",
    "http_s": "http (time to finish)",
    "rss": "peak RSS (http)",
    "enqueue": "enqueue, single calls",
    "lat_p50": "latency p50",
    "lat_p99": "latency p99",
    "cpu_prefork": "cpu, prefork",
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
STARTED = time.monotonic()

# key -> (label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "drain": ("drain: {drain:,} x INCR, results on, -c 500", "tasks/s", True),
    "noop": ("noop: {noop:,} x no-op, results off, -c 500", "tasks/s", True),
    "http_s": ("http: {http:,} x GET /delay/100, -c 500", "s", False),
    "http_eff": ("http efficiency (ideal {ideal:.1f} s / actual)", "", True),
    "rss": ("peak RSS of the worker during http", "MB", False),
    "enqueue": ("enqueue: {enqueue:,} single delay() calls", "tasks/s", True),
    "enqueue_batch": ("enqueue: {enqueue:,} batch (greenq task.map)", "tasks/s", True),
    "lat_p50": ("latency enqueue→get() p50 at 100 tasks/s", "ms", False),
    "lat_p99": ("latency enqueue→get() p99 at 100 tasks/s", "ms", False),
    "cpu_prefork": ("cpu: {cpu} x 50 ms, prefork -c {cores}, efficiency", "", True),
    "cpu_hybrid": ("cpu: {cpu} x 50 ms, hybrid (gevent + cpu=True), efficiency", "", True),
    "drain_cpu": ("worker CPU per task, drain", "ms", False),
    "noop_cpu": ("worker CPU per task, noop", "ms", False),
    "http_cpu": ("worker CPU per task, http", "ms", False),
    "drain_rcpu": ("redis-server CPU per task, drain", "ms", False),
    "http_rcpu": ("redis-server CPU per task, http", "ms", False),
}


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---- processes ---------------------------------------------------------------------------


class Procs:
    """Children of this run: started with output to a log file, stopped by PID, never by name."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.live: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        self.count += 1
        path = self.log_dir / f"{self.count:03d}-{name}.log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        proc.log_path = path  # type: ignore[attr-defined]
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {grace_s:.0f} s; SIGKILL")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc, grace_s=5.0)


def tail(proc: subprocess.Popen[bytes], lines: int = 5) -> str:
    text = Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class Sampler(threading.Thread):
    """Peak RSS of a process and its children, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                return


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children so far."""
    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])


# ---- the bench -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Procs, server: RedisServer) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.procs = procs
        self.url = server.url
        self.r = redis.Redis.from_url(self.url)
        self.cores = os.cpu_count() or 1
        self.target = ""
        self.values: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.notes: dict[tuple[str, str], str] = {}
        self.failures: list[str] = []
        self.open_apps: list[Any] = []
        self.loops, self.task_s = 0, CPU_TASK_S

    def env(self, framework: str | None) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(SCRIPTS), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, BENCH_REDIS_URL=self.url, GREENQ_BROKER_URL=self.url, PYTHONPATH=path)
        env.pop("BENCH_FRAMEWORK", None)
        if framework:
            env["BENCH_FRAMEWORK"] = framework
        return env

    def record(self, key: str, framework: str, value: float) -> None:
        self.values[key, framework].append(value)

    # -- helpers shared by workloads

    def apps(self, framework: str) -> Any:
        """A fresh producer app per run: no caches survive a FLUSHALL (kombu's declared queues)."""
        maker = bench_tasks.make_greenq_app if framework == "greenq" else bench_tasks.make_celery_app
        app = maker(self.url)
        self.open_apps.append(app)
        return app

    def prefill(self, framework: str, name: str, args: list[tuple[Any, ...]]) -> list[str]:
        app = self.apps(framework)
        task = app.tasks[f"bench.{name}"]
        if framework == "greenq":
            return [result.id for result in task.map(args)]
        with app.producer_or_acquire() as producer:
            return [task.apply_async(a, producer=producer).id for a in args]

    def backlog(self, framework: str) -> int:
        """Messages not yet handed to the pool: greenq acks (XDELs) when it dispatches; Celery
        acks on accept, and holds prefetched messages in the ``unacked`` hash."""
        if framework == "greenq":
            return int(self.r.xlen(Keys.stream(bench_tasks.QUEUE)))
        return int(self.r.llen(bench_tasks.QUEUE)) + int(self.r.hlen("unacked"))

    def counter(self) -> int:
        return int(self.r.get(bench_tasks.COUNTER) or 0)

    def redis_cpu(self) -> float:
        info = self.r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def start_worker(self, framework: str, pool: str = "gevent", concurrency: int = CONCURRENCY) -> Any:
        if framework == "greenq":
            args = ["-m", "greenq", "worker", "-A", "bench_tasks", "--pool", pool, "-c", str(concurrency)]
            args += ["-Q", bench_tasks.QUEUE, "-l", "WARNING"]
        else:
            args = ["-m", "celery", "-A", "bench_tasks:celery", "worker", "-P", pool, "-c", str(concurrency)]
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", bench_tasks.QUEUE]
            args += ["-l", "WARNING"]
        return self.procs.spawn([sys.executable, *args], self.env(framework), f"{framework}-{pool}")

    def wait(self, done: Callable[[], bool], proc: Any, timeout_s: float, what: str) -> float:
        """Poll ``done`` every 10 ms; the time it became true. Raises if the worker died or timed out."""
        deadline = time.perf_counter() + timeout_s
        while not done():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what}: worker exited with {proc.returncode}: {tail(proc)}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{what}: not done after {timeout_s:.0f} s")
            time.sleep(0.01)
        return time.perf_counter()

    def finish(self, proc: Any) -> None:
        """Stop the worker, close this run's producer apps, FLUSHALL."""
        if proc is not None:
            self.procs.stop(proc)
        while self.open_apps:
            self.open_apps.pop().close()
        self.r.flushall()

    # -- workloads: each runs one repeat for one framework

    def drain(self, framework: str) -> str:
        n = self.sizes["drain"]
        self.prefill(framework, "incr", [()] * n)
        assert self.backlog(framework) == n, "prefill did not land in the queue"
        redis_cpu = self.redis_cpu()
        started = time.perf_counter()
        proc = self.start_worker(framework)
        try:
            ended = self.wait(lambda: self.counter() >= n, proc, 60 + n / 50, "drain")
            worker_cpu = cpu_seconds(proc.pid)
        finally:
            self.finish(proc)
        self.record("drain", framework, n / (ended - started))
        self.record("drain_cpu", framework, worker_cpu / n * 1000)
        self.record("drain_rcpu", framework, (self.redis_cpu() - redis_cpu) / n * 1000)
        return f"{n / (ended - started):,.0f} tasks/s, worker CPU {worker_cpu / n * 1e3:.3f} ms/task"

    def noop(self, framework: str) -> str:
        n = self.sizes["noop"]
        # The INCR sentinel is fetched last (FIFO): done = sentinel ran and nothing left queued.
        self.prefill(framework, "noop", [()] * (n - 1))
        self.prefill(framework, "incr", [()])
        started = time.perf_counter()
        proc = self.start_worker(framework)

        def done() -> bool:
            return self.counter() >= 1 and self.backlog(framework) == 0

        try:
            ended = self.wait(done, proc, 60 + n / 50, "noop")
            worker_cpu = cpu_seconds(proc.pid)
        finally:
            self.finish(proc)
        self.record("noop", framework, n / (ended - started))
        self.record("noop_cpu", framework, worker_cpu / n * 1000)
        return f"{n / (ended - started):,.0f} tasks/s"

    def http(self, framework: str) -> str:
        n = self.sizes["http"]
        ideal = n / CONCURRENCY * HTTP_DELAY_MS / 1000
        ids = self.prefill(framework, "fetch", [(f"{self.target}/delay/{HTTP_DELAY_MS}",)] * n)
        if framework == "greenq":
            keys = [Keys.result(i) for i in ids]
        else:
            keys = [self.apps(framework).backend.get_key_for_task(i) for i in ids[:1]]
            keys = [keys[0].replace(ids[0].encode(), i.encode()) for i in ids]
        probe = self.r.connection_pool.make_connection()
        packed = probe.pack_command("EXISTS", *keys)  # packed once: the poll costs Redis, not us

        def all_results() -> bool:
            if self.backlog(framework):
                return False
            probe.send_packed_command(packed, check_health=False)
            return int(probe.read_response()) == n

        redis_cpu = self.redis_cpu()
        started = time.perf_counter()
        proc = self.start_worker(framework)
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            ended = self.wait(all_results, proc, 60 + n / 20, "http")
            worker_cpu = cpu_seconds(proc.pid)
            sampler.done.set()
            self.check_results(framework, ids[:: max(1, n // 5)], 200)
        finally:
            sampler.done.set()
            probe.disconnect()
            self.finish(proc)
        elapsed = ended - started
        self.record("http_s", framework, elapsed)
        self.record("http_eff", framework, ideal / elapsed)
        self.record("rss", framework, sampler.peak / 2**20)
        self.record("http_cpu", framework, worker_cpu / n * 1000)
        self.record("http_rcpu", framework, (self.redis_cpu() - redis_cpu) / n * 1000)
        return f"{elapsed:.2f} s (efficiency {ideal / elapsed:.2f}), peak RSS {sampler.peak / 2**20:.1f} MB"

    def check_results(self, framework: str, ids: list[str], expected: Any) -> None:
        app = self.apps(framework)
        for task_id in ids:
            value = app.AsyncResult(task_id).get(timeout=10)
            if value != expected:
                raise RuntimeError(f"{framework} task {task_id} returned {value!r}, expected {expected!r}")

    def ceilings(self, _framework: str) -> str:
        out = []
        for kind, arg, n in (
            ("http", f"{self.target}/delay/{HTTP_DELAY_MS}", self.sizes["http"]),
            ("incr", "-", self.sizes["drain"]),
        ):
            args = [sys.executable, str(SCRIPTS / "bench_tasks.py"), "ceiling", kind, arg, str(n)]
            proc = self.procs.spawn([*args, str(CONCURRENCY)], self.env(None), f"ceiling-{kind}")
            try:
                proc.wait(60 + n / 50)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"ceiling {kind} not done in time") from None
            finally:
                self.finish(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"ceiling {kind} failed: {tail(proc)}")
            result = json.loads(Path(proc.log_path).read_text().strip().splitlines()[-1])
            rate = result["n"] / result["elapsed_s"]
            self.record(f"ceiling_{kind}", "ceiling", rate)
            out.append(f"{kind} {rate:,.0f}/s")
        return ", ".join(out)

    def enqueue(self, framework: str) -> str:
        n = self.sizes["enqueue"]
        task = self.apps(framework).tasks["bench.incr"]
        started = time.perf_counter()
        for _ in range(n):
            task.delay()
        single = n / (time.perf_counter() - started)
        self.record("enqueue", framework, single)
        assert self.backlog(framework) == n
        self.finish(None)
        if framework == "celery":
            self.notes["enqueue_batch", "celery"] = "no pipelined batch API"
            return f"single {single:,.0f}/s"
        started = time.perf_counter()
        task.map([()] * n)
        batch = n / (time.perf_counter() - started)
        self.record("enqueue_batch", framework, batch)
        assert self.backlog(framework) == n
        self.finish(None)
        return f"single {single:,.0f}/s, batch {batch:,.0f}/s"

    def latency(self, framework: str) -> str:
        app = self.apps(framework)
        task = app.tasks["bench.echo"]
        proc = self.start_worker(framework)
        rate, count = 100, 100 * self.sizes["latency_s"]

        def one() -> float:
            started = time.perf_counter()
            result = task.delay().get(timeout=10)
            assert result == 1
            return (time.perf_counter() - started) * 1000

        try:
            task.delay().get(timeout=60)  # the worker is up and consuming
            for _ in range(20):
                one()
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                futures, start = [], time.perf_counter()
                for i in range(count):
                    time.sleep(max(0.0, start + i / rate - time.perf_counter()))
                    futures.append(pool.submit(one))
                samples = [f.result() for f in futures]
        finally:
            self.finish(proc)
        cuts = statistics.quantiles(samples, n=100)
        self.record("lat_p50", framework, cuts[49])
        self.record("lat_p99", framework, cuts[98])
        return f"p50 {cuts[49]:.2f} ms, p99 {cuts[98]:.2f} ms over {count} tasks"

    def cpu(self, framework: str) -> str:
        out = [self.cpu_run(framework, "prefork", self.cores, "burn", "cpu_prefork")]
        if framework == "greenq":
            out.append(self.cpu_run(framework, "gevent", CONCURRENCY, "burn_cpu", "cpu_hybrid"))
        else:
            self.notes["cpu_hybrid", "celery"] = "no hybrid pool"
        return "; ".join(out)

    def cpu_run(self, framework: str, pool: str, concurrency: int, name: str, key: str) -> str:
        n, loops = self.sizes["cpu"], self.loops
        proc = self.start_worker(framework, pool, concurrency)
        try:
            self.prefill(framework, name, [(0,)])
            try:
                self.wait(lambda: self.counter() >= 1, proc, 60, f"cpu {pool} warm-up")
            except RuntimeError as exc:
                if proc.poll() is None:
                    raise
                self.notes[key, framework] = f"not yet available: {tail(proc, 1)[:90]}"
                return f"{pool}: not yet available ({exc})"
            pids = {int(p) for p in self.r.smembers(bench_tasks.PIDS)}
            if pids == {proc.pid}:
                self.notes[key, framework] = f"not yet available: ran in the worker process ({pool})"
                return f"{pool} {name}: not yet available, the task ran in the worker process itself"
            started = time.perf_counter()
            self.prefill(framework, name, [(loops,)] * n)
            ended = self.wait(lambda: self.counter() >= n + 1, proc, 60 + n * CPU_TASK_S * 4, "cpu")
        finally:
            self.finish(proc)
        efficiency = n * self.task_s / self.cores / (ended - started)
        self.record(key, framework, efficiency)
        return f"{pool}: {ended - started:.2f} s, efficiency {efficiency:.2f}"

    def calibrate(self) -> None:
        """Loops of ``spin`` that take CPU_TASK_S here; ``task_s`` is the measured time of one."""
        probe = 200_000
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            bench_tasks.spin(probe)
            timings.append(time.perf_counter() - started)
        self.loops = int(probe * CPU_TASK_S / statistics.median(timings))
        started = time.perf_counter()
        bench_tasks.spin(self.loops)
        self.task_s = time.perf_counter() - started
        log(f"cpu task: spin({self.loops:,}) takes {self.task_s * 1000:.1f} ms")


# ---- report --------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit.endswith("/s") or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def cell(bench: Bench, key: str, framework: str, unit: str) -> str:
    values = bench.values.get((key, framework))
    if not values:
        return bench.notes.get((key, framework), "—")
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, unit)
    return f"{fmt(med, unit)} ({fmt(min(values), unit)}-{fmt(max(values), unit)})"


def median(bench: Bench, key: str, framework: str) -> float | None:
    values = bench.values.get((key, framework))
    return statistics.median(values) if values else None


def table(bench: Bench) -> tuple[str, list[tuple[str, float]]]:
    """The markdown table, and (label, greenq advantage) pairs for the chart."""
    ideal = bench.sizes["http"] / CONCURRENCY * HTTP_DELAY_MS / 1000
    sizes = dict(bench.sizes, cores=bench.cores, ideal=ideal)
    rows = ["| workload | unit | greenq | Celery | greenq/Celery | better |", "|---|---|--:|--:|--:|:-:|"]
    chart = []
    for key, (label, unit, higher) in METRICS.items():
        g, c = median(bench, key, "greenq"), median(bench, key, "celery")
        if g is None and c is None and (key, "greenq") not in bench.notes:
            continue
        ratio = f"{g / c:.2f}x" if g is not None and c else "—"
        rows.append(
            f"| {label.format(**sizes)} | {unit} | {cell(bench, key, 'greenq', unit)} | "
            f"{cell(bench, key, 'celery', unit)} | {ratio} | {'higher' if higher else 'lower'} |"
        )
        if g and c and key in CHART:
            chart.append((CHART[key], g / c if higher else c / g))
    ceilings = (
        ("ceiling_http", "http", "raw requests.get, 500 greenlets, no queue"),
        ("ceiling_incr", "drain", "raw INCR, 500 greenlets, no queue"),
    )
    for key, workload, label in ceilings:
        ceiling = median(bench, key, "ceiling")
        if ceiling is None:
            continue
        rows.append(f"| ceiling: {label} | /s | {cell(bench, key, 'ceiling', 'tasks/s')} | | | |")
        fractions = []
        for framework in FRAMEWORKS:
            if workload == "http":
                seconds = median(bench, "http_s", framework)
                rate = bench.sizes["http"] / seconds if seconds else None
            else:
                rate = median(bench, "drain", framework)
            fractions.append(f"{rate / ceiling:.0%}" if rate else "—")
        rows.append(f"| {workload} throughput as a fraction of it | | {' | '.join(fractions)} | | |")
    if bench.failures:
        rows.append("\nFailed runs (left out of the figures): " + "; ".join(bench.failures))
    return "\n".join(rows), chart


def versions(bench: Bench) -> str:
    names = ("greenq", "celery", "kombu", "redis", "hiredis", "gevent", "requests")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    server = bench.r.info("server")["redis_version"]
    return f"Python {platform.python_version()}, " + ", ".join(found) + f", Redis server {server}"


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.platform()}"


def draw_chart(chart: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(chart) + 1.5))
    labels, values = [c[0] for c in chart][::-1], [c[1] for c in chart][::-1]
    bars = ax.barh(labels, values, color=["#2a9d8f" if v >= 1 else "#e76f51" for v in values])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("greenq advantage over Celery (x, log scale; > 1 = greenq better)")
    for bar, value in zip(bars, values, strict=True):
        ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:.1f}x", va="center")
    ax.set_title("greenq vs Celery 5 (gevent -c 500, same Redis, same task bodies)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_doc(out: Path, section: str) -> None:
    text = out.read_text() if out.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{BEGIN}\n{section}\n{END}{rest.split(END, 1)[1]}")


def report(bench: Bench, command: str, elapsed_s: float) -> None:
    rows, chart = table(bench)
    print(rows)
    out = Path(bench.args.out)
    image = out.parent / "img" / "benchmarks.png"
    if chart:
        draw_chart(chart, image)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    repeats = bench.args.repeats
    section = "\n".join(
        [
            f"Command: `{command}` ({'1 repeat' if repeats == 1 else f'{repeats} repeats'}; "
            f"median, with min-max; the run took {elapsed_s / 60:.1f} min)  ",
            f"Date: {date}  ",
            f"Machine: {machine()}  ",
            f"Versions: {versions(bench)}",
            "",
            rows,
            "",
            f"![greenq advantage over Celery]({image.relative_to(out.parent).as_posix()})" if chart else "",
        ]
    )
    write_doc(out, section)
    log(f"wrote {out} and {image}")


# ---- main -----------------------------------------------------------------------------------


def start_target(procs: Procs, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = procs.spawn([sys.executable, "-m", "greenq.demo.target", "--port", str(port)], env, "target")
    deadline = time.monotonic() + 30
    while "listening on" not in Path(proc.log_path).read_text():  # type: ignore[attr-defined]
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"HTTP target did not start: {tail(proc)}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, ~10x smaller workloads")
    parser.add_argument("--repeats", type=int, help="runs per workload and framework (default 3; quick 1)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(WORKLOADS)} (memory = http)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    wanted = [w.strip().replace("memory", "http") for w in (args.only or ",".join(WORKLOADS)).split(",")]
    unknown = set(wanted) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in wanted]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    log_dir = Path(tempfile.mkdtemp(prefix="greenq-bench-"))
    procs = Procs(log_dir)
    server = RedisServer(binary=bundled_binary()).start()
    log(f"redis-server pid {server.pid} on {server.url}; child logs in {log_dir}")
    try:
        bench = Bench(args, procs, server)
        _, bench.target = start_target(procs, bench.env(None))
        log(f"HTTP target {bench.target}; workloads {', '.join(args.workloads)}, {args.repeats} repeat(s)")
        bench.calibrate()
        for workload in args.workloads:
            runners = ["ceiling"] if workload == "ceilings" else list(FRAMEWORKS)
            for repeat in range(1, args.repeats + 1):
                for framework in runners:
                    bench.r.flushall()
                    try:
                        summary = getattr(bench, workload)(framework)
                    except (RuntimeError, AssertionError, redis.RedisError) as exc:
                        summary = f"FAILED: {exc}"
                        bench.failures.append(f"{workload} {framework} #{repeat}: {exc}")
                    log(f"{workload} {framework} {repeat}/{args.repeats}: {summary}")
        report(bench, command, time.monotonic() - STARTED)
    finally:
        procs.stop_all()
        server.stop()
        log(f"stopped redis-server pid {server.pid} and every child")
    return 0


if __name__ == "__main__":
    sys.exit(main())
