"""The system under test as real processes: the broker Redis (AOF on, restartable on its port),
the TCP proxy every worker reaches it through, and the worker fleet (gevent, prefork, hybrid,
and a ``--processes 2`` supervisor), each started in a session of its own so that signals can
be sent to one worker and its children at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from greenq.embedded import RedisServer, bundled_binary, free_port, system_binary

ROOT = Path(__file__).resolve().parents[2]
PROXY = Path(__file__).resolve().parent / "proxy.py"
APP = "tests.apps.chaos_app"

# kind -> worker flags. Concurrency is small on purpose: the bound on duplicates is per worker.
FLAGS: dict[str, list[str]] = {
    "gevent": ["-P", "gevent", "-c", "20", "--cpu-workers", "0"],
    "prefork": ["-P", "prefork", "-c", "2"],
    "hybrid": ["-P", "gevent", "-c", "20", "--cpu-workers", "1"],
    "multi": ["-P", "gevent", "-c", "10", "--cpu-workers", "0", "--processes", "2"],
}
CONCURRENCY = {"gevent": 20, "prefork": 2, "hybrid": 21, "multi": 10}
PREFETCH = 4  # worker_prefetch_multiplier's default


@dataclass
class Worker:
    """One ``greenq worker`` command; ``anchor`` workers are never SIGKILLed (their memory is
    watched), the others are, and are replaced by a fresh process of the same kind."""

    kind: str
    index: int
    anchor: bool
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    pids: list[int] = field(default_factory=list)  # every main pid this slot has had

    @property
    def name(self) -> str:
        return f"{self.kind}{self.index}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The worker's main process and every descendant (prefork children, supervised ones)."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


@dataclass
class Target:
    """A worker process a fault can hit: ``pid`` leads its process group. Anchors are never
    killed; a killed plain worker needs a replacement (``replace``), a supervised one does not
    (its supervisor restarts it)."""

    worker: Worker
    pid: int
    concurrency: int
    killable: bool
    replace: bool

    @property
    def capacity(self) -> int:
        return PREFETCH * self.concurrency


class Cluster:
    """Broker Redis + proxy + workers, all started and stopped here, by PID."""

    def __init__(self, run_dir: Path, fleet: list[tuple[str, bool]], lost_timeout_s: float) -> None:
        self.run_dir = run_dir
        self.ledger_dir = run_dir / "ledger"
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        binary = system_binary() or bundled_binary()
        self.redis = RedisServer(binary, data_dir=str(run_dir / "redis"), appendonly=True)
        os.makedirs(self.redis.data_dir, exist_ok=True)
        self.proxy_port = free_port()
        self.proxy: subprocess.Popen[str] | None = None
        self.lost_timeout_s = lost_timeout_s
        self.workers = [Worker(kind, i, anchor) for i, (kind, anchor) in enumerate(fleet)]
        self.fsync = "everysec"
        self.lock = threading.Lock()  # one Redis-side fault (restart, pause, fill) at a time
        self.stopped: set[int] = set()  # pids under SIGSTOP now

    @property
    def direct_url(self) -> str:
        return self.redis.url

    @property
    def proxy_url(self) -> str:
        return f"redis://127.0.0.1:{self.proxy_port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.direct_url, socket_timeout=10, socket_connect_timeout=5)

    # ---- Redis -------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis.start()
        client = self.client()
        # RedisServer starts AOF with appendfsync always; the run uses everysec but once.
        client.config_set("appendfsync", self.fsync)
        client.config_set("notify-keyspace-events", "Et")  # the result listener (load.py)
        client.close()

    def restart_redis(self, down_s: float, fsync: str) -> None:
        """SIGKILL Redis (a crash), keep it down ``down_s``, start it again from its AOF."""
        if fsync != self.fsync:
            self.fsync = fsync
            client = self.client()
            client.config_set("appendfsync", fsync)
            client.close()
        self.redis.kill()
        time.sleep(down_s)
        self.start_redis()

    # ---- proxy -------------------------------------------------------------------------

    def start_proxy(self) -> None:
        self.proxy = subprocess.Popen(
            [sys.executable, str(PROXY), str(self.proxy_port), str(self.redis.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proxy.stdout is not None
        if self.proxy.stdout.readline().strip() != "ready":
            raise RuntimeError("the chaos proxy did not start")

    def tell_proxy(self, command: str) -> None:
        assert self.proxy is not None and self.proxy.stdin is not None
        self.proxy.stdin.write(command + "\n")
        self.proxy.stdin.flush()

    # ---- workers -----------------------------------------------------------------------

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
        env.update(
            GREENQ_BROKER_URL=self.proxy_url,
            GREENQ_WORKER_LOST_TIMEOUT=str(self.lost_timeout_s),
            GREENQ_SHUTDOWN_TIMEOUT="20",
            CHAOS_LEDGER_DIR=str(self.ledger_dir),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(ROOT),
        )
        env.update(extra or {})
        return env

    def start_worker(self, worker: Worker, env: dict[str, str]) -> None:
        worker.log = self.run_dir / f"worker-{worker.name}-{len(worker.pids)}.log"
        with open(worker.log, "wb") as out:
            worker.proc = subprocess.Popen(
                [sys.executable, "-m", "greenq", "worker", "-A", APP, "-l", "INFO", "-n", f"{worker.name}@%h"]
                + FLAGS[worker.kind],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker.pids.append(worker.proc.pid)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every worker process (each supervised child too) logged that it is ready."""
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            want = 2 if worker.kind == "multi" else 1
            while worker.log is None or worker.log.read_text(errors="replace").count("worker ready") < want:
                if time.monotonic() > deadline or not worker.alive():
                    raise RuntimeError(f"worker {worker.name} not ready; see {worker.log}")
                time.sleep(0.2)

    def signal_group(self, pid: int, signum: int) -> None:
        """Send ``signum`` to the process group led by ``pid`` (a worker and its children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)

    def targets(self) -> list[Target]:
        """Every worker process a fault may hit: each plain worker (with its children), and each
        process a ``--processes`` supervisor runs (own group; the supervisor restarts it)."""
        found = []
        for worker in self.workers:
            if not worker.alive():
                continue
            if worker.kind != "multi":
                found.append(
                    Target(worker, worker.pid, CONCURRENCY[worker.kind], not worker.anchor, not worker.anchor)
                )
                continue
            try:
                children = psutil.Process(worker.pid).children()
            except psutil.NoSuchProcess:
                continue
            found.extend(Target(worker, child.pid, CONCURRENCY["multi"], True, False) for child in children)
        return found

    def capacity_of(self, worker: Worker) -> int:
        """Messages all of a worker's processes may hold at once (prefetch x concurrency)."""
        return PREFETCH * CONCURRENCY[worker.kind] * (2 if worker.kind == "multi" else 1)

    def rss(self, worker: Worker) -> int:
        """RSS in bytes of the worker's main process (0 if it is gone)."""
        try:
            return int(psutil.Process(worker.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            return 0

    def stop_all(self, graceful_s: float) -> dict[str, int | None]:
        """SIGTERM every worker's group, wait up to ``graceful_s``, SIGKILL what is left; then the
        proxy and Redis. Returns worker name -> exit code (None: it had to be killed)."""
        for target in self.targets():
            self.signal_group(target.pid, signal.SIGCONT)
        for worker in self.workers:
            if worker.alive():
                worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + graceful_s
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                codes[worker.name] = worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[worker.name] = None
            for proc in worker.processes():
                proc.kill()
            self.signal_group(worker.pid, signal.SIGKILL)
        if self.proxy is not None and self.proxy.poll() is None:
            self.tell_proxy("quit")
            try:
                self.proxy.wait(5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
        self.redis.stop()
        return codes
