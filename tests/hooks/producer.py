"""A producer in a process of its own: signal receivers and spans connected there stay there,
never in the pytest process (signals are module-level)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_producer(redis_url: str, code: str) -> list[str]:
    """Run ``code`` with ``python -c`` against ``redis_url``; the lines it printed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "GREENQ_BROKER_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()
