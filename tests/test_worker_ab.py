"""scripts/worker_ab.py end to end, small: both variants run in turn and the medians are printed.

It checks that the harness works (a worker per run, the Redis connections counted), never how
fast anything is. The adaptive cap is on in one variant and off in the other, as in
docs/benchmarks.md's "Adaptive concurrency".
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_worker_ab_runs_each_variant_in_turn_and_prints_medians() -> None:
    command = [sys.executable, str(ROOT / "scripts" / "worker_ab.py"), "--n", "400", "--repeats", "2"]
    command += ["-c", "50", "on=", "off=GREENQ_WORKER_ADAPTIVE_CONCURRENCY=0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = re.findall(
        r"^(\d)/2 +(on|off): [\d,]+ tasks/s, [\d.]+ ms CPU/task, (\d+) Redis connections$", done.stdout, re.M
    )
    assert [(repeat, name) for repeat, name, _ in runs] == [
        ("1", "on"),
        ("1", "off"),
        ("2", "on"),
        ("2", "off"),
    ]
    assert all(1 <= int(connections) <= 50 + 5 for *_, connections in runs)  # the body's, plus the worker's
    assert re.search(r"^ +on: [\d,]+ tasks/s", done.stdout, re.M) and re.search(
        r"^ +off: ", done.stdout, re.M
    )
