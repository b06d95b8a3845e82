"""Packaging: the version is written once (greenq/__init__.py) and setup.py reports that one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import greenq

ROOT = Path(__file__).resolve().parent.parent


def test_setup_py_reads_the_version_from_the_package() -> None:
    done = subprocess.run(
        [sys.executable, "setup.py", "--version"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == greenq.__version__
    assert not re.search(r"version\s*=\s*[\"']", (ROOT / "setup.py").read_text()), "a second literal version"
