"""scripts/bench.py end to end in --quick mode (issue 7): the harness runs, fills its table, draws its chart.

The benchmark is run rarely and by hand, so without this a change to greenq or to Celery could
break it unnoticed. This checks that it works — both frameworks give figures, the ceilings and
the shares of them are printed — and never how fast anything is: CI machines are small and shared.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# drain and enqueue: greenq and Celery, with the start-up rows, the drain body's own ceiling and the
# producer ceilings; http_client: a greenq-only body (greenq.http) and its ceiling.
WORKLOADS = "drain,http_client,enqueue"
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?( \(.+\))?$")  # "1,345" or "0.55 (0.51-0.60)"
TWO_RATES = re.compile(r"^\d[\d,]* / \d[\d,]*$")  # a ceiling: from the first call / from the spawn
TWO_SHARES = re.compile(r"^\d+% / \d+%$")  # from the first task / from the spawn
RUN_TIMEOUT_S = 150  # under pytest's 180 s, so the bench still gets a SIGTERM and stops its children


def run_bench(tmp_path: Path, out: Path) -> tuple[int, str]:
    """Run the bench; on a timeout SIGTERM it by PID (it then stops its own children), then SIGKILL."""
    scratch = tmp_path / "tmp"  # its child logs and frozen greenq copy, not left behind in /tmp
    scratch.mkdir()
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--repeats", "1"]
    command += ["--only", WORKLOADS, "--out", str(out)]
    env = dict(os.environ, TMPDIR=str(scratch))
    with open(tmp_path / "bench.log", "w+") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        log.seek(0)
        return code, log.read()


def table_rows(text: str) -> dict[str, list[str]]:
    """The generated section's markdown table: first cell (the row label) -> the other cells."""
    section = text.split("<!-- bench:begin -->", 1)[1].split("<!-- bench:end -->", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def row(rows: dict[str, list[str]], prefix: str) -> list[str]:
    found = [cells for label, cells in rows.items() if label.startswith(prefix)]
    assert len(found) == 1, f"expected one row starting {prefix!r}, found {len(found)} in {list(rows)}"
    return found[0]


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)  # pyproject's 180 s: the bench's own timeout, then its cleanup
def test_bench_quick_runs_and_reports_figures(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    code, log = run_bench(tmp_path, out)
    assert code == 0, log[-3000:]
    text = out.read_text()
    assert "Failed runs" not in text, log[-3000:]
    rows = table_rows(text)
    assert row(rows, "workload")[:3] == ["unit", "greenq", "Celery"]
    both = ("worker start-up: spawn → first task taken", "worker start-up: spawn → first task done (drain")
    for label in (*both, "drain: 2,000 x INCR", "drain incl. start-up", "enqueue: 2,000 single"):
        greenq, celery = row(rows, label)[1:3]
        assert NUMBER.match(greenq) and NUMBER.match(celery), (label, greenq, celery)
    greenq, celery = row(rows, "http: 1,000 x GET, greenq.http")[1:3]
    assert NUMBER.match(greenq) and celery.startswith("—"), (greenq, celery)
    # A ceiling's figures are in the greenq column; a worker body's ceiling in both windows.
    for ceiling in ("ceiling: the greenq.http body from", "ceiling: the drain body"):
        assert TWO_RATES.match(row(rows, ceiling)[1]), ceiling
    assert NUMBER.match(row(rows, "ceiling: raw XADD of a greenq message, one redis")[1])
    greenq, celery = row(rows, "drain as a share")[1:3]
    assert TWO_SHARES.match(greenq) and TWO_SHARES.match(celery), (greenq, celery)
    assert TWO_SHARES.match(row(rows, "http through greenq.http as a share")[1])
    for share in ("enqueue single as a share", "enqueue batch as"):
        assert re.match(r"^\d+%$", row(rows, share)[1]), share
    image = tmp_path / "img" / "benchmarks.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
