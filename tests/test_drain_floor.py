"""scripts/drain_floor.py end to end, small: the INCR ceiling, the bare loop and a greenq worker
each make every call once (the script checks the counter and the result records and fails
otherwise) and the table names all three. It checks the harness, never how fast anything is
(docs/benchmarks.md has the figures)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_drain_floor_runs_the_ceiling_the_bare_loop_and_a_worker_on_every_task() -> None:
    command = [sys.executable, str(ROOT / "scripts" / "drain_floor.py"), "--tasks", "2000", "--repeats", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = re.findall(
        r"^1/1 +(ceiling|bare loop|greenq): [\d,]+ calls/s, \d+ us CPU each$", done.stdout, re.M
    )
    assert runs == ["ceiling", "bare loop", "greenq"]
    shares = re.findall(
        r"^ +(ceiling|bare loop|greenq): [\d,]+ calls/s, \d+ us CPU each, (\d+)% of the ceiling$",
        done.stdout,
        re.M,
    )
    assert [kind for kind, _ in shares] == ["ceiling", "bare loop", "greenq"]
    assert shares[0][1] == "100"


def test_drain_floor_refuses_a_run_too_short_to_time() -> None:
    command = [sys.executable, str(ROOT / "scripts" / "drain_floor.py"), "--tasks", "300"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--tasks must be at least 2,000" in done.stderr
