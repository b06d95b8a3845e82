"""Task bodies for ``scripts/bench_canvas.py``: the same no-op and sum under greenq and Celery.

Workers import this module with ``BENCH_FRAMEWORK=greenq`` (``-A bench_canvas_tasks``) or
``BENCH_FRAMEWORK=celery`` (``-A bench_canvas_tasks:celery``), so neither imports the other.
"""

from __future__ import annotations

import os
from typing import Any

QUEUE = "canvas"
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def noop_body(*args: Any) -> None:
    return None


def total_body(values: list[Any]) -> int:
    return len(values)


if os.environ.get("BENCH_FRAMEWORK", "greenq") == "celery":
    from celery import Celery

    celery = Celery("bench_canvas", broker=URL, backend=URL)
    celery.conf.update(
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=4,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    noop = celery.task(name="noop")(noop_body)
    total = celery.task(name="total")(total_body)
else:
    from greenq import GreenQ

    app = GreenQ("bench_canvas", broker=URL, task_default_queue=QUEUE, result_expires=3600)
    noop = app.task(name="noop")(noop_body)
    total = app.task(name="total")(total_body)
