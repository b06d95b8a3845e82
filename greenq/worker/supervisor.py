"""``greenq worker --processes N``: N patched worker processes under one small supervisor.

One gevent process uses one core; this puts every core to work. The supervisor only starts
children, restarts one that dies, and forwards signals: the first SIGTERM/SIGINT makes every
child shut down gracefully (each returns its reserved messages and waits for its running
tasks); a second one makes them exit at once. Each child is an ordinary worker with its own
consumer name and heartbeat, tagged with the group name so ``greenq status`` shows them
together. Imports: stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

logger = logging.getLogger("greenq.worker.supervisor")
RESTART_DELAY_S = 1.0


def strip_processes(argv: list[str]) -> list[str]:
    """The worker's argv without ``--processes N`` (children run one process each)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out


def run_group(worker_argv: list[str], processes: int, group: str) -> int:
    """Run ``processes`` workers with ``worker_argv`` until signalled; returns the exit code."""
    children: dict[int, subprocess.Popen[bytes]] = {}
    signals = {"count": 0}

    def spawn(index: int) -> None:
        args = [
            sys.executable,
            "-m",
            "greenq",
            "worker",
            *worker_argv,
            "--group",
            f"{group}:{index}/{processes}",
        ]
        children[index] = subprocess.Popen(args, preexec_fn=_die_with_parent)
        logger.info("worker process %s/%s started (pid %s)", index, processes, children[index].pid)

    def forward(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        logger.warning(
            "%s: %s all %s worker processes",
            signal.Signals(signum).name,
            "stopping" if signals["count"] == 1 else "killing",
            len(children),
        )
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signals["count"] == 1 else signal.SIGINT)
                if signals["count"] > 1:
                    child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(1, processes + 1):
        spawn(index)
    while not signals["count"]:
        for index, child in list(children.items()):
            code = child.poll()
            if code is not None and not signals["count"]:
                logger.error(
                    "worker process %s (pid %s) exited with %s; restarting it", index, child.pid, code
                )
                time.sleep(RESTART_DELAY_S)
                spawn(index)
        time.sleep(0.2)
    codes = [child.wait() for child in children.values()]
    logger.info("all worker processes stopped: exit codes %s", codes)
    return 0 if all(code == 0 for code in codes) else 1


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM (a graceful stop) if the supervisor itself is killed."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def resolve(processes: str) -> int:
    """``auto`` means one process per core."""
    return (os.cpu_count() or 1) if processes == "auto" else max(1, int(processes))
