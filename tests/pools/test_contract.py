"""The Pool contract (greenq/pools/base.py) on every pool: solo and prefork in this process,
gevent in a patched subprocess as a worker runs it. The checks live in tests/pools/contract.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.pools.contract import CHECKS, LIMIT_CHECKS, run_check

CASES = [
    pytest.param(kind, name, id=f"{kind}-{name}")
    for kind in ("solo", "gevent", "prefork")
    for name in CHECKS
    if kind != "solo" or name not in LIMIT_CHECKS
]


@pytest.fixture(scope="module")
def gevent_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str | None]]:
    """Every check on GeventPool, run once in a patched interpreter."""
    root = tmp_path_factory.mktemp("gevent-contract")
    done = subprocess.run(
        [sys.executable, "-m", "tests.pools.patched_contract", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    yield json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_pool_contract(kind: str, name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if kind == "gevent":
        error = request.getfixturevalue("gevent_report")[name]
        assert error is None, error
    else:
        run_check(kind, name, tmp_path)
