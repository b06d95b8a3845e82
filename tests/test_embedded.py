"""The embedded broker: a real redis-server under GREENQ_HOME, shared, persistent (AOF)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from greenq import GreenQ
from greenq.embedded import EmbeddedRedis, find_home

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


# ---- issue 26, item 5: which Redis am I talking to? -------------------------------------------


def _bare_env() -> dict[str, str]:
    """No broker URL and no GREENQ_HOME: the embedded server is found from the directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    if "GREENQ_CEILING_DIRECTORIES" in os.environ:
        env["GREENQ_CEILING_DIRECTORIES"] = os.environ["GREENQ_CEILING_DIRECTORIES"]
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args],
        cwd=cwd,
        env=_bare_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path):
    """A project directory; the embedded server a test starts in it is stopped by PID afterwards."""
    root = tmp_path / "shop-project"
    (root / "shop").mkdir(parents=True)
    yield root
    EmbeddedRedis(root / ".greenq").stop()


def test_commands_in_a_subdirectory_find_the_project_embedded_server(project: Path) -> None:
    started = _run(project, "embedded", "start")
    home = (project / ".greenq").resolve()
    assert started.stdout.strip() == EmbeddedRedis(home).url
    assert (
        started.stderr == f"greenq: started an embedded redis-server in {home} ({EmbeddedRedis(home).url})\n"
    )
    sent = _run(project / "shop", "send", "shop.tasks.ping", "[1]")
    assert sent.returncode == 0 and sent.stderr == ""  # attached, nothing started
    assert not (project / "shop" / ".greenq").exists()
    status = _run(project / "shop", "status")
    assert status.stdout.startswith(f"BROKER {EmbeddedRedis(home).url} (embedded redis-server in {home})\n")
    assert re.search(r"^default\s+1\s", status.stdout, re.M)
    config = _run(project / "shop", "config")
    assert re.search(
        rf"^broker_url\s+{re.escape(EmbeddedRedis(home).url)}\s+\(embedded redis-server", config.stdout, re.M
    )


def test_read_only_commands_never_start_a_server_and_say_where_they_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # A .greenq/ above the test's directory (someone's /tmp/.greenq) must not be found: the search
    # stops at the ceiling, which this test proves by putting one just above it.
    (tmp_path / ".greenq").mkdir()
    monkeypatch.setenv("GREENQ_CEILING_DIRECTORIES", str(tmp_path))
    assert find_home(empty) is None
    _read_only_commands_say_where_they_looked(empty)
    monkeypatch.delenv("GREENQ_CEILING_DIRECTORIES")
    assert find_home(empty) == (tmp_path / ".greenq").resolve()  # without the ceiling it is found


def _read_only_commands_say_where_they_looked(empty: Path) -> None:
    for args in (["status"], ["inspect", "active"], ["peek", "default"], ["result", "x"], ["events"]):
        proc = _run(empty, *args)
        assert proc.returncode == 1, args
        assert proc.stderr == (
            "greenq: error: no broker: no broker_url configured (--broker, GREENQ_BROKER_URL, --config) "
            f"and no embedded Redis running (no .greenq/ in {empty.resolve()} or its parents); "
            "`greenq embedded start` or a worker starts one\n"
        ), args
    config = _run(empty, "config")
    assert config.returncode == 0 and "no embedded Redis running" in config.stderr
    assert re.search(
        r"^broker_url\s+\(none\)\s+\(not configured; no embedded Redis running\)", config.stdout, re.M
    )
    assert not (empty / ".greenq").exists()


def test_embedded_status_shows_the_pid_the_server_reports(home) -> None:
    home.ensure_running()
    env = {**_bare_env(), "GREENQ_HOME": str(home.home)}
    home.pid_path.unlink()  # a lost pid file used to print "pid None"

    status = subprocess.run(
        [sys.executable, "-m", "greenq", "embedded", "status"], env=env, capture_output=True, text=True
    )
    pid = int(re.search(r"\(pid (\d+),", status.stdout)[1])
    assert b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()  # that pid is the server
    assert home.stop() and not home.is_running()
    stopped = subprocess.run(
        [sys.executable, "-m", "greenq", "embedded", "status"], env=env, capture_output=True, text=True
    )
    assert stopped.returncode == 1 and "pid None" not in stopped.stdout
    assert stopped.stdout.startswith(f"not running (GREENQ_HOME={home.home})")
