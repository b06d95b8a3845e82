"""greenq: a Python task queue on Redis Streams for HTTP-heavy (gevent) and CPU-bound (prefork) work.

Re-exports the public API lazily (PEP 562), so ``import greenq`` has no side effects and
imports nothing heavy: the CLI must be able to monkey-patch with gevent before redis, requests
or the user's app are imported. Owns ``__version__``. Imports nothing from greenq at import
time; each name is imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one version number: setup.py reads this line

_EXPORTS = {
    "GreenQ": "greenq.app",
    "Task": "greenq.task",
    "shared_task": "greenq.registry",
    "Settings": "greenq.config",
    "AsyncResult": "greenq.results",
    "crontab": "greenq.cron",
    "Signature": "greenq.canvas",
    "signature": "greenq.canvas",
    "group": "greenq.canvas",
    "chain": "greenq.canvas",
    "chord": "greenq.canvas",
    "GroupResult": "greenq.canvas",
    "GreenqError": "greenq.exceptions",
    "ConfigError": "greenq.exceptions",
    "EncodeError": "greenq.exceptions",
    "MessageTooLarge": "greenq.exceptions",
    "DecodeError": "greenq.exceptions",
    "BrokerError": "greenq.exceptions",
    "BrokerUnavailable": "greenq.exceptions",
    "TaskError": "greenq.exceptions",
    "TaskRevoked": "greenq.exceptions",
    "Retry": "greenq.exceptions",
    "ResultTimeout": "greenq.exceptions",
    "TimeLimitExceeded": "greenq.exceptions",
    "SoftTimeLimitExceeded": "greenq.exceptions",
    "WorkerLostError": "greenq.exceptions",
    "NotRegistered": "greenq.exceptions",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.canvas import GroupResult, Signature, chain, chord, group, signature
    from greenq.config import Settings
    from greenq.cron import crontab
    from greenq.exceptions import (
        BrokerError,
        BrokerUnavailable,
        ConfigError,
        DecodeError,
        EncodeError,
        GreenqError,
        MessageTooLarge,
        NotRegistered,
        ResultTimeout,
        Retry,
        SoftTimeLimitExceeded,
        TaskError,
        TaskRevoked,
        TimeLimitExceeded,
        WorkerLostError,
    )
    from greenq.registry import shared_task
    from greenq.results import AsyncResult
    from greenq.task import Task


def __getattr__(name: str) -> Any:
    if name in ("http", "admin"):  # submodules, imported on first use
        return importlib.import_module(f"greenq.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'greenq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
