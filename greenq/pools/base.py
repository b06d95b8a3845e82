"""The pool contract: run jobs somewhere (greenlets, child processes, inline) and report back.

Owns ``Job`` (what to run: picklable, no Redis, no delivery details), ``Outcome`` (what came of
it, already encoded) and the ``Pool`` protocol. Pools never import the broker or Redis; the
consumer (greenq.worker.consumer) sits between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Job:
    """One task call to run. ``key`` is the consumer's handle to match the outcome back."""

    key: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    started: float = 0.0


@dataclass(slots=True)
class Outcome:
    """The result of running a Job: a state, the encoded result record, and for RETRY the delay.

    ``payload`` is the JSON state record to store (None with ignore_result). ``error`` is a short
    "Type: message" for logs. ``lost`` is set when the process running the job died.
    """

    state: str
    payload: bytes | None = None
    retry_in_s: float | None = None
    error: str | None = None
    lost: bool = False
    runtime_s: float = 0.0


Runner = Callable[[Job], Outcome]
OnDone = Callable[[Job, Outcome], None]


class Pool(Protocol):
    """Where jobs run. ``submit`` never blocks: call it only when ``free_slots() > 0``."""

    kind: str
    concurrency: int

    def start(self) -> None: ...
    def free_slots(self) -> int: ...
    def running(self) -> int: ...
    def submit(self, job: Job, on_done: OnDone) -> None: ...
    def stop(self, timeout_s: float | None) -> bool:
        """Wait for running jobs up to ``timeout_s``; True if all finished."""
        ...

    def stats(self) -> dict[str, Any]: ...
