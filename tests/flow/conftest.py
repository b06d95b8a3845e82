"""Fixtures of the flow-control tests: the test app as a producer, and the HTTP target."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def flow(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """tests/flow/flow_app.py as a producer, pointed at this test's Redis."""
    from tests.flow import flow_app

    monkeypatch.setenv("GREENQ_BROKER_URL", redis_url)
    for made in flow_app._client:
        made.close()
    flow_app._client.clear()
    flow_app.app.close()
    flow_app.app._settings = None
    yield flow_app
    flow_app.app.close()
    flow_app.app._settings = None


class TargetProcess:
    """tests/flow/target.py in a subprocess: hosts 127.0.0.1 ... 127.0.0.N on one port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "target.py"), *args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.port = int(line.split()[-1])

    def stats(self) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as reply:
            found: dict[str, dict[str, int]] = json.loads(reply.read())
        return found

    def host(self, n: int) -> dict[str, int]:
        return self.stats().get(f"127.0.0.{n}", {})

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def http_target(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TargetProcess]]:
    started: list[TargetProcess] = []

    def start(*args: str) -> TargetProcess:
        target = TargetProcess(*args)
        started.append(target)
        monkeypatch.setenv("FLOW_TARGET_PORT", str(target.port))
        return target

    yield start
    for target in started:
        target.stop()


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` (a read of Redis or the target) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
