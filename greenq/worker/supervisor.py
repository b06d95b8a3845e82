"""``greenq worker --processes N``: N patched worker processes under one small supervisor.

One gevent process uses one core; this puts every core to work. The supervisor only starts
children, restarts one that dies, and forwards signals. Each child runs in a process group of
its own, so a signal sent to the supervisor's group (Ctrl-C in a terminal, ``kill -TERM -PGID``,
many process managers) reaches each child once, through the supervisor, and never also
directly: the first SIGTERM/SIGINT makes every child shut down gracefully (each returns its
reserved messages and waits for its running tasks); a second one makes them exit at once.
Each child is an ordinary worker with its own consumer name and heartbeat, tagged with the
group name so ``greenq status`` shows them together. Imports: stdlib only.
"""

from __future__ import annotations

import contextlib
import gc
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
    gc.enable()  # the command line may run a worker's imports with it off
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
        children[index] = subprocess.Popen(args, preexec_fn=_own_group_die_with_parent)
        logger.info("worker process %s/%s started (pid %s)", index, processes, children[index].pid)

    def forward(signum: int, _frame: Any) -> None:
        signals["count"] += 1
        logger.warning(
            "%s: %s all %s worker processes",
            signal.Signals(signum).name,
            "stopping" if signals["count"] == 1 else "killing",
            len(children),
        )
        # One signal per signal received: a child's first is its graceful stop, its second
        # its hard exit, however the supervisor's own signal was delivered.
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

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


def _own_group_die_with_parent() -> None:
    """In the child before exec: a process group of its own (group signals go to the supervisor
    only), and, on Linux, SIGTERM (a graceful stop) if the supervisor itself is killed."""
    import ctypes

    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def resolve(processes: str) -> int:
    """``auto`` means one process per core."""
    return (os.cpu_count() or 1) if processes == "auto" else max(1, int(processes))
