"""scripts/redis_connect_cost.py end to end, small: it connects with redis-py as installed and with
greenq's cached version lookup, in turn, and prints both medians. It checks the harness, never
how fast anything is (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_redis_connect_cost_times_both_lookups_in_turn() -> None:
    command = [
        sys.executable,
        str(ROOT / "scripts" / "redis_connect_cost.py"),
        "--connects",
        "5",
        "--repeats",
        "2",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = re.findall(
        r"^(\d)/2 +(as installed|version cached): [\d.]+ ms wall, [\d.]+ ms CPU each$", done.stdout, re.M
    )
    assert runs == [
        ("1", "as installed"),
        ("1", "version cached"),
        ("2", "as installed"),
        ("2", "version cached"),
    ]
    for name in ("as installed", "version cached"):
        assert re.search(rf"^ *{name}: [\d.]+ ms wall, [\d.]+ ms CPU per connect$", done.stdout, re.M)
