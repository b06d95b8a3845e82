"""``greenq send`` and ``greenq result`` against a real worker; clear one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env["GREENQ_BROKER_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_send_waits_for_the_result_and_result_shows_it(redis_url: str, start_worker) -> None:
    start_worker("-c", "4")
    sent = _cli(redis_url, "send", "tests.apps.basic.add", "[2, 3]", "--wait", "20")
    assert sent.returncode == 0, sent.stderr
    task_id, value = sent.stdout.split()
    assert value == "5"
    shown = _cli(redis_url, "result", task_id)
    record = json.loads(shown.stdout)
    assert record["state"] == "SUCCESS" and record["result"] == 5 and record["id"] == task_id


def test_malformed_json_arguments_are_one_line(redis_url: str) -> None:
    proc = _cli(redis_url, "send", "tests.apps.basic.add", "[2, ")
    assert proc.returncode == 1
    assert proc.stderr.startswith("greenq: error: arguments are not valid JSON")
    assert "Traceback" not in proc.stderr


def test_unreachable_broker_is_one_line_with_masked_password() -> None:
    proc = _cli("redis://me:secret@127.0.0.1:1/0", "send", "x.y", "[]")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr
    assert "me:***@127.0.0.1:1" in proc.stderr
