"""Fixtures for the dashboard tests: one stack per test package and process — a redis-server of
its own, a real ``greenq worker`` (task events on) and a real ``greenq dashboard`` — and one
headless Chromium driven by Playwright.

The stack has its own Redis so that the suite's FLUSHALL between other tests never pulls the
heartbeats and consumer groups from under a worker these tests share. The browser is Debian's
``chromium`` (Playwright cannot download its own here): without it, or without Playwright, the
tests fail saying what to install; they never skip.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from greenq.embedded import RedisServer, bundled_binary
from tests.conftest import ROOT, WorkerProcess

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "img"
APP = "tests.dashboard.dash_app"


def subprocess_env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_") or k == "GREENQ_HOME"}
    env.update({"GREENQ_BROKER_URL": url, "PYTHONUNBUFFERED": "1", "GREENQ_WORKER_CPU_WORKERS": "0"})
    env.update(extra or {})
    return env


class DashboardProcess:
    """A ``greenq dashboard`` subprocess; ``base`` is its URL once it says it serves."""

    def __init__(
        self, url: str, *args: str, env: dict[str, str] | None = None, wait: bool = True, app: str = APP
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenq", "dashboard", "-A", app, *args],
            cwd=ROOT,
            env=subprocess_env(url, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.base = ""
        if wait:
            found = self.wait_for(r"serving (http://\S+?)/$")
            self.base = found.group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exited>")
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if found := regex.search(line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or "<exited>" in self.lines:
                    raise AssertionError(f"no {pattern!r} from the dashboard:\n{self.output[-3000:]}")
                self._cond.wait(min(left, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class Stack:
    url: str
    r: redis.Redis
    app: Any  # tests.dashboard.dash_app.app, producing to this stack's Redis
    worker: WorkerProcess
    dashboard: DashboardProcess

    @property
    def base(self) -> str:
        return self.dashboard.base


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    server = RedisServer(bundled_binary()).start()
    worker = dashboard = None
    from tests.dashboard import dash_app

    overrides = list(dash_app.app._overrides)
    try:
        dash_app.app.override({"broker_url": server.url}, "dashboard tests")
        dash_app._client.clear()
        worker = WorkerProcess(
            ["-A", APP, "-l", "INFO", "-Q", "drain,fragile", "-c", "20", "-E", "--no-schedule"],
            subprocess_env(server.url),
        )
        worker.wait_for("worker ready")
        dashboard = DashboardProcess(server.url, "--port", "0")
        yield Stack(server.url, redis.Redis.from_url(server.url), dash_app.app, worker, dashboard)
    finally:
        for process in (dashboard, worker):
            if process is not None:
                process.stop()
        dash_app.app.close()
        dash_app.app._overrides[:] = overrides
        dash_app.app._settings = None
        dash_app._client.clear()
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the dashboard's browser tests need Playwright: pip install -e '.[test]' "
            "(or pip install playwright)",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the dashboard's browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium "
            "(.ci/run installs it; Playwright's own browser download cannot reach the network here)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) and page; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(20_000)
    yield opened
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def until(page: Any, expression: str, timeout_s: float = 20.0) -> Any:
    """Poll a JavaScript expression in the page until it is truthy (its value is returned).

    Playwright's ``wait_for_function`` evaluates strings with ``eval`` inside the page, which
    the dashboard's Content-Security-Policy forbids; ``evaluate`` goes through the DevTools
    protocol and is not subject to it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s:g} s: {expression}")
        page.wait_for_timeout(100)


def shot(page: Any, name: str) -> Path:
    """Save a screenshot for docs/dashboard.md (the test run refreshes them)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
