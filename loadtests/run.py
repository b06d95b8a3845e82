"""Runs every load-test scenario and writes ``docs/loadtests.md`` with its table, charts and reports.

One command, bounded in time and count, loopback only::

    python loadtests/run.py            # full run, ~8 minutes
    python loadtests/run.py --quick    # smoke run, under 2 minutes

It starts its own ``redis-server`` on a free port (``greenq.embedded.RedisServer``) and the HTTP
target (``loadtests/target.py``, two processes), measures the target alone, then for each scenario:
flushes Redis, starts ``python -m greenq worker -A loadtests.tasks`` with the pool under test, runs
``locust --headless`` against it (``loadtests/locustfile.py``), samples CPU and RSS of every process it
started with psutil, and stops the worker by PID. Everything it started is stopped by PID at the end,
also on Ctrl-C or an error. Raw outputs (locust CSVs, worker logs) stay in a temporary directory whose
path is printed; the HTML reports are copied to ``docs/loadtests/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from greenq.config import Settings  # noqa: E402
from greenq.embedded import RedisServer, server_version  # noqa: E402
from loadtests import tasks  # noqa: E402

DOCS = ROOT / "docs"
REPORTS = DOCS / "loadtests"
HTML_OUT = ROOT / "loadtests" / "out" / "reports"  # ignored by git
IMAGES = DOCS / "img"
DELAY_MS = 100
HAS_HYBRID = "worker_cpu_workers" in {field.name for field in dataclasses.fields(Settings)}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One locust run against one worker configuration."""

    key: str
    title: str
    kind: str  # LT_KIND
    pool: str
    concurrency: int
    users: int
    spawn_rate: int
    cpu_task: str = "cpu_burn"
    cpu_users: int = 0
    hybrid: bool = False  # a gevent worker with a child-process pool for cpu=True tasks
    quick: bool = True  # also part of --quick

    def worker_args(self) -> list[str]:
        args = ["-m", "greenq", "worker", "-A", "loadtests.tasks", "--pool", self.pool]
        args += ["-c", str(self.concurrency), "-Q", "loadtests", "-n", f"lt-{self.key}@%h"]
        args += ["--shutdown-timeout", "5", "-l", "INFO"]
        if HAS_HYBRID and self.pool == "gevent":
            args += ["--cpu-workers", "2" if self.hybrid else "0"]
        return args

    def worker_label(self) -> str:
        label = f"{self.pool} -c {self.concurrency}"
        return (
            f"{label} + {'2 CPU children' if HAS_HYBRID else 'NO hybrid support'}" if self.hybrid else label
        )


SCENARIOS = [
    Scenario("http-gevent", "HTTP tasks, gevent pool", "http", "gevent", 500, 200, 100),
    Scenario("http-prefork", "HTTP tasks, prefork pool", "http", "prefork", 2, 200, 100),
    Scenario("cpu-prefork", "CPU tasks, prefork pool", "cpu", "prefork", 2, 16, 16),
    Scenario("cpu-gevent", "CPU tasks, gevent pool", "cpu", "gevent", 500, 16, 16),
    Scenario(
        "mixed-hybrid",
        "HTTP + CPU tasks, hybrid gevent worker (CPU tasks declared cpu=True)",
        "mixed",
        "gevent",
        500,
        200,
        100,
        cpu_task="cpu_burn_child",
        cpu_users=6,
        hybrid=True,
    ),
    Scenario(
        "mixed-gevent",
        "HTTP + CPU tasks, plain gevent worker (control: CPU tasks in greenlets)",
        "mixed",
        "gevent",
        500,
        200,
        100,
        cpu_task="cpu_burn",
        cpu_users=6,
        quick=False,
    ),
]


# ---- processes -----------------------------------------------------------------------------------


def start_logged(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, needle: str, timeout_s: float = 30) -> str:
    """The first line of ``log`` containing ``needle``; raises if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{' '.join(map(str, proc.args))[:120]} not ready:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; its descendants seen alive are killed by PID too."""
    if proc is None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            child.wait(3)
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.is_running():
                child.kill()


# ---- sampling ------------------------------------------------------------------------------------


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Sampler(threading.Thread):
    """Samples CPU seconds and RSS of process trees every ``interval_s`` while a scenario runs.

    CPU of a tree = sum over its processes of (last CPU seen - CPU at the start), so children that
    start during the window count in full. ``other`` is what the whole machine spent minus every tree
    sampled here: other people's processes sharing the two cores.
    """

    def __init__(self, roots: dict[str, int], interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.roots: dict[str, int] = {}
        self.interval_s = interval_s
        self.baseline: dict[int, float] = {}
        self.last: dict[str, dict[int, float]] = {}
        self.peak_rss: dict[str, int] = {}
        self.peak_main_rss: dict[str, int] = {}
        self.procs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        for name, pid in roots.items():
            self.add(name, pid)
        self._sample(baseline=True)
        self.started = time.monotonic()
        self.machine_start = psutil.cpu_times()

    def add(self, name: str, pid: int) -> None:
        """Sample one more tree from now on (a process started inside the window counts in full)."""
        with self._lock:
            self.last[name] = {}
            self.peak_rss[name] = self.peak_main_rss[name] = self.procs[name] = 0
            self.roots[name] = pid

    def _sample(self, baseline: bool = False) -> None:
        with self._lock:
            roots = dict(self.roots)
        for name, pid in roots.items():
            total_rss = 0
            procs = _tree(pid)
            for index, proc in enumerate(procs):
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                cpu = times.user + times.system
                if baseline:
                    self.baseline[proc.pid] = cpu
                self.last[name][proc.pid] = cpu
                total_rss += rss
                if index == 0:
                    self.peak_main_rss[name] = max(self.peak_main_rss[name], rss)
            self.peak_rss[name] = max(self.peak_rss[name], total_rss)
            self.procs[name] = max(self.procs[name], len(procs))

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            self._sample()

    def finish(self) -> dict[str, Any]:
        self._halt.set()
        self.join(5)
        self._sample()
        wall = time.monotonic() - self.started
        end = psutil.cpu_times()
        idle = (end.idle + getattr(end, "iowait", 0)) - (
            self.machine_start.idle + getattr(self.machine_start, "iowait", 0)
        )
        busy = sum(end) - sum(self.machine_start) - idle
        cpu = {
            name: sum(value - self.baseline.get(pid, 0.0) for pid, value in seen.items())
            for name, seen in self.last.items()
        }
        mine = sum(cpu.values())
        return {
            "wall_s": wall,
            "cpu_pct": {name: 100 * value / wall for name, value in cpu.items()},
            "other_cpu_pct": max(0.0, 100 * (busy - mine) / wall),
            "idle_pct": 100 * idle / wall,
            "peak_rss_mb": {name: value / 2**20 for name, value in self.peak_rss.items()},
            "peak_main_rss_mb": {name: value / 2**20 for name, value in self.peak_main_rss.items()},
            "procs": dict(self.procs),
        }


@contextlib.contextmanager
def sampling(roots: dict[str, int], out: dict[str, Any]) -> Iterator[Sampler]:
    """Sample while the block runs; the figures land in ``out`` when it ends."""
    sampler = Sampler(roots)
    sampler.start()
    try:
        yield sampler
    finally:
        out.update(sampler.finish())


# ---- locust output -------------------------------------------------------------------------------


def _num(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def read_stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """``{"complete http": {...}, "enqueue http": {...}, "body http": {...}}`` from ``_stats.csv``."""
    rows: dict[str, dict[str, Any]] = {}
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Type"] not in ("complete", "enqueue", "body"):
                continue
            rows[f"{row['Type']} {row['Name']}"] = {
                "count": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": _num(row["Requests/s"]),
                "avg_ms": _num(row["Average Response Time"]),
                "p50_ms": _num(row["50%"]),
                "p95_ms": _num(row["95%"]),
                "p99_ms": _num(row["99%"]),
                "max_ms": _num(row["Max Response Time"]),
            }
    return rows


def read_history(prefix: Path) -> dict[str, list[tuple[float, float]]]:
    """Per task kind, (seconds since start, current completed/s) from ``_stats_history.csv``."""
    series: dict[str, list[tuple[float, float]]] = {}
    start: float | None = None
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            stamp = float(row["Timestamp"])
            start = stamp if start is None else start
            if row["Type"] == "complete":
                series.setdefault(row["Name"], []).append((stamp - start, float(row["Requests/s"])))
    return series


def read_failures(prefix: Path) -> list[str]:
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [
            f"{row['Occurrences']} x {row['Method']} {row['Name']}: {row['Error']}"
            for row in csv.DictReader(handle)
        ]


# ---- one scenario --------------------------------------------------------------------------------


def locust_args(scenario: Scenario, duration_s: int, prefix: Path, html: Path) -> list[str]:
    return [
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "-u",
        str(scenario.users),
        "-r",
        str(scenario.spawn_rate),
        "-t",
        f"{duration_s}s",
        "--stop-timeout",
        "0",
        "--reset-stats",
        "--only-summary",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(html),
        "--loglevel",
        "WARNING",
    ]


def hub_warnings(log: Path) -> dict[str, int]:
    """Per task name, the warnings in which the gevent pool said a task blocked the hub."""
    found: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if "blocked the event loop" in line:
            name = line.split(" task ", 1)[-1].split("[", 1)[0].rsplit(".", 1)[-1]
            found[name] = found.get(name, 0) + 1
    return found


def wait_quiet(limit_s: float, busy_pct: float = 15.0) -> dict[str, float]:
    """Wait up to ``limit_s`` for the machine to be nearly idle (other people's jobs share it).

    Only the idle target and redis-server of this run are up meanwhile. Returns the seconds waited
    and the machine's busy % (of all cores) in the last second sampled.
    """
    started = time.monotonic()
    busy = psutil.cpu_percent(interval=1.0)
    while busy > busy_pct and time.monotonic() - started < limit_s:
        busy = psutil.cpu_percent(interval=1.0)
    return {"waited_s": round(time.monotonic() - started, 1), "busy_pct": busy}


@dataclasses.dataclass
class Context:
    """What every scenario shares: the work dir, environments and the long-lived processes."""

    work: Path
    worker_env: dict[str, str]
    locust_env: dict[str, str]
    roots: dict[str, int]  # name -> PID of the target and redis-server, sampled in every scenario


def run_scenario(scenario: Scenario, duration_s: int, ctx: Context) -> dict[str, Any]:
    """Start the worker, run locust, stop the worker; returns the scenario's figures."""
    worker_log = ctx.work / f"{scenario.key}-worker.log"
    locust_log = ctx.work / f"{scenario.key}-locust.log"
    prefix = ctx.work / scenario.key
    html = ctx.work / f"{scenario.key}.html"
    locust_env = dict(
        ctx.locust_env,
        LT_KIND=scenario.kind,
        LT_CPU_TASK=scenario.cpu_task,
        LT_CPU_USERS=str(scenario.cpu_users),
    )
    usage: dict[str, Any] = {}
    worker = start_logged(scenario.worker_args(), worker_log, ctx.worker_env)
    locust: subprocess.Popen[bytes] | None = None
    try:
        wait_for_line(worker, worker_log, "worker ready")
        started = time.monotonic()
        with sampling({"worker": worker.pid, **ctx.roots}, usage) as sampler:
            locust = start_logged(locust_args(scenario, duration_s, prefix, html), locust_log, locust_env)
            sampler.add("locust", locust.pid)
            try:
                locust.wait(duration_s + 90)
            except subprocess.TimeoutExpired:
                stop(locust)
        elapsed = time.monotonic() - started
    finally:
        stop(locust)
        stop(worker)
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust wrote no stats:\n{locust_log.read_text()[-3000:]}")
    worker_text = worker_log.read_text(errors="replace")
    return {
        "scenario": dataclasses.asdict(scenario),
        "worker": scenario.worker_label(),
        "duration_s": duration_s,
        "elapsed_s": round(elapsed, 1),
        "locust_exit": locust.returncode if locust else None,
        "stats": read_stats(prefix),
        "history": read_history(prefix),
        "failures": read_failures(prefix),
        "usage": usage,
        "hub_warnings": hub_warnings(worker_log),
        "hybrid_active": "hybrid:" in worker_text,
        "worker_processed": next(
            (line.split("stopped:", 1)[1].strip() for line in worker_text.splitlines() if "stopped:" in line),
            "",
        ),
        "html": str(html),
    }


# ---- the whole run -------------------------------------------------------------------------------


def measure_target(duration_s: float, tool: str) -> dict[str, Any]:
    """``target.py --bench``: what the target serves alone at 500 connections and 100 ms delay."""
    args = [str(ROOT / "loadtests" / "target.py"), "--bench", "--procs", "2", "--connections", "500"]
    args += ["--delay-ms", str(DELAY_MS), "--duration", str(duration_s), "--tool", tool]
    usage: dict[str, Any] = {}
    with sampling({}, usage) as sampler:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, cwd=ROOT)
        sampler.add("bench", proc.pid)
        try:
            out, _ = proc.communicate(timeout=duration_s + 60)
        except subprocess.TimeoutExpired:
            stop(proc)  # type: ignore[arg-type]
            raise
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["other_cpu_pct"] = round(usage["other_cpu_pct"])
    return result


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(redis_binary: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    dirty = _git("status", "--porcelain", "--", "greenq")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": server_version(redis_binary),
        "versions": {p: _version(p) for p in ("greenq", "locust", "gevent", "redis", "requests", "psutil")},
        "greenq_commit": _git("rev-parse", "--short", "HEAD")
        + (" + uncommitted changes in greenq/" if dirty else ""),
        "hybrid_supported": HAS_HYBRID,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def run_all(args: argparse.Namespace, scenarios: list[Scenario], work: Path) -> dict[str, Any]:
    """Target measurement, then every scenario against one redis-server and one target."""
    bench_s = 4.0 if args.quick else 10.0
    target_runs = [measure_target(bench_s, "gevent")]
    if not args.quick and shutil.which("wrk"):
        target_runs.append(measure_target(bench_s, "wrk"))
    for run in target_runs:
        print(f"target alone: {run['req_per_s']:,.0f} req/s with {run['tool']}", flush=True)
    server = RedisServer().start()
    target: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {
        "target": target_runs,
        "cpu_body_ms": round(tasks.time_cpu_body(), 1),
        "machine": machine(server.binary),
        "scenarios": [],
    }
    try:
        env = dict(os.environ, GREENQ_BROKER_URL=server.url, PYTHONUNBUFFERED="1")
        target = start_logged(
            [str(ROOT / "loadtests" / "target.py"), "--procs", "2"], work / "target.log", env
        )
        port = int(wait_for_line(target, work / "target.log", "listening on").split()[2])
        locust_env = dict(
            env,
            GREENQ_BROKER_URL=server.url,
            LT_TARGET_URL=f"http://127.0.0.1:{port}/delay/{DELAY_MS}",
            LT_TIMEOUT=str(args.timeout),
        )
        assert server.pid is not None
        ctx = Context(work, env, locust_env, {"target": target.pid, "redis": server.pid})
        client = redis.Redis.from_url(server.url)
        for scenario in scenarios:
            client.flushall()
            quiet = wait_quiet(args.wait_quiet / len(scenarios)) if args.wait_quiet else None
            print(
                f"{scenario.key}: {scenario.title} ({args.duration}s, {scenario.users} users) ...", flush=True
            )
            result = run_scenario(scenario, args.duration, ctx)
            result["quiet"] = quiet
            results["scenarios"].append(result)
            for name, row in result["stats"].items():
                if name.startswith("complete"):
                    print(
                        f"  {name}: {row['rps']:,.1f}/s, p50 {row['p50_ms']:.0f} ms, "
                        f"p99 {row['p99_ms']:.0f} ms, {row['failures']} failures",
                        flush=True,
                    )
        client.close()
    finally:
        stop(target)
        server.stop()
    return results


def publish(results: dict[str, Any]) -> None:
    """Keep locust's HTML reports in loadtests/out/reports/ (generated, ~1 MB each, not in git);
    write results.json and docs/loadtests.md with charts."""
    from loadtests import report

    HTML_OUT.mkdir(parents=True, exist_ok=True)
    REPORTS.mkdir(parents=True, exist_ok=True)
    for result in results["scenarios"]:
        html = Path(result.pop("html"))
        if html.exists():
            shutil.copyfile(html, HTML_OUT / html.name)
    (REPORTS / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report.write(results, DOCS / "loadtests.md", IMAGES)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s per scenario, 5 scenarios (< 2 minutes)")
    parser.add_argument("--duration", type=int, help="seconds of locust per scenario (default 60, quick 10)")
    parser.add_argument("--only", help="comma-separated scenario keys: " + ",".join(s.key for s in SCENARIOS))
    parser.add_argument("--timeout", type=float, default=60.0, help="AsyncResult.get timeout in the users")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="wait before each scenario until the machine is < 15 %% busy; this many s in all, split evenly",
    )
    parser.add_argument("--no-docs", action="store_true", help="print figures, leave docs/ alone")
    args = parser.parse_args()
    args.duration = args.duration or (10 if args.quick else 60)
    scenarios = [s for s in SCENARIOS if s.quick or not args.quick]
    if args.only:
        keys = set(args.only.split(","))
        scenarios = [s for s in SCENARIOS if s.key in keys]
    work = Path(tempfile.mkdtemp(prefix="greenq-loadtests-"))
    started = time.monotonic()
    print(f"raw output in {work}", flush=True)
    results = run_all(args, scenarios, work)
    results["command"] = "python loadtests/run.py " + " ".join(sys.argv[1:])
    results["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["runtime_s"] = round(time.monotonic() - started, 1)
    if args.no_docs:
        (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    else:
        publish(results)
    print(f"done in {results['runtime_s']:.0f} s; results in {work}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
