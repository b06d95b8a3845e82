"""Worker logging: text or JSON lines, with the running task's id and name on every record.

``TaskContextFilter`` sits on the handler, so records from any logger (the user's own too)
emitted inside a task carry ``task_id`` and ``task_name`` (None outside a task): it reads the
request context the executor already sets per greenlet, thread or child process, so it costs
nothing on the hot path. ``JsonFormatter`` writes one JSON object per line for log shippers.
Only ``cli`` and prefork children (``worker.execute.ChildApp``) call ``configure``.
Imports: task (the request context), orjson.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

from greenq.task import _current_request

TEXT_FORMAT = "[%(asctime)s %(levelname)s/%(process)d] %(name)s: %(message)s"
FORMATS = ("text", "json")


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` and ``task_name`` of the task running in this context to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current_request.get()
        if fields is None:
            record.task_id = record.__dict__.get("task_id")
            record.task_name = record.__dict__.get("task_name")
        else:
            record.task_id = fields.get("id")
            record.task_name = fields.get("task")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, worker, pid, task_name, task_id,
    message, and ``exc`` (the traceback) when the record has one."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker or f"{socket.gethostname()}.{os.getpid()}"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "worker": getattr(record, "worker", None) or self.worker,
            "pid": record.process,
            "task_name": getattr(record, "task_name", None),
            "task_id": getattr(record, "task_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str = "text", worker: str | None = None) -> logging.Handler:
    """Log ``level`` and above to stderr as ``fmt`` ("text" or "json"), replacing the root
    logger's handlers; returns the handler.

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TaskContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler
