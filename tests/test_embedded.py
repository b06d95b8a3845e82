"""The embedded broker: a real redis-server under GREENQ_HOME, shared, persistent (AOF)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from greenq import GreenQ
from greenq.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GREENQ_HOME", str(tmp_path / "gq"))
    embedded = EmbeddedRedis()
    yield embedded
    embedded.stop()


def test_no_broker_url_starts_the_embedded_server_and_queued_tasks_survive_a_restart(home) -> None:
    app = GreenQ("emb")
    app.send_task("x.y", [1])
    assert app.broker_url() == home.url and home.is_running()
    pid = home.pid()
    assert pid is not None
    assert home.stop()
    assert not home.is_running()
    again = GreenQ("emb2")
    assert again.broker.client.xlen("greenq:{q:default}:stream") == 1  # AOF replayed
    assert home.pid() != pid


def test_embedded_cli_status_and_stop(home) -> None:
    env = {"PATH": "/usr/bin:/bin", "GREENQ_HOME": str(home.home), "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "greenq", "embedded", *args], env=env, capture_output=True, text=True
        )

    assert cli("status").returncode == 1
    assert cli("start").stdout.strip() == home.url
    status = cli("status")
    assert status.returncode == 0 and status.stdout.startswith("running: unix://")
    assert cli("stop").stdout.strip() == "stopped"
    assert cli("status").stdout.startswith("not running")
