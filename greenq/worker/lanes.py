"""Lanes: a worker's pools and their queues of reserved messages.

"main" is the worker's own pool; a hybrid gevent worker adds "cpu" (child processes for
``cpu=True`` tasks). Each lane has its own queue, so CPU work waiting for a child never holds up
I/O work behind it. The "cpu" lane's child processes start with its first task (``LazyPool``):
an HTTP worker whose module merely defines a ``cpu=True`` task does not pay for them.
Imports: broker (Delivery), message, pools.base; no Redis calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from greenq.broker import Delivery
from greenq.message import Message
from greenq.pools.base import Job, OnDone, Pool

if TYPE_CHECKING:
    from greenq.task import Task


@dataclass(slots=True)
class Reserved:
    delivery: Delivery
    message: Message
    task: Task
    acks_late: bool
    lane: str = "main"
    started: float = 0.0
    policy: Any = None  # the task's resolved options (admission.Policy), set by admission


class Lanes:
    """The worker's pools by lane — "main" (the worker's pool) and, in a hybrid gevent worker,
    "cpu" (child processes for ``cpu=True`` tasks) — each with its own queue of reserved
    messages, so CPU work waiting for a child never holds up I/O work behind it."""

    def __init__(self, main: Pool, cpu: Pool | None) -> None:
        self.pools: dict[str, Pool] = {"main": main}
        if cpu is not None:
            self.pools["cpu"] = cpu
        self.ready: dict[str, deque[Reserved]] = {lane: deque() for lane in self.pools}

    @property
    def concurrency(self) -> int:
        return sum(pool.concurrency for pool in self.pools.values())

    def reserved(self) -> int:
        return sum(len(queue) for queue in self.ready.values())

    def running(self) -> int:
        return sum(pool.running() for pool in self.pools.values())

    def can_dispatch(self, limit: int) -> bool:
        """Can ``take`` give anything, with at most ``limit`` more tasks allowed in flight?"""
        if limit <= 0:
            return False
        return any(self.ready[lane] and pool.free_slots() > 0 for lane, pool in self.pools.items())

    def take(self, limit: int) -> list[Reserved]:
        """Reserved messages for the free pool slots, at most ``limit`` in all."""
        batch: list[Reserved] = []
        for lane, pool in self.pools.items():
            queue = self.ready[lane]
            count = min(len(queue), pool.free_slots(), limit - len(batch))
            batch.extend([queue.popleft() for _ in range(max(0, count))])
        return batch

    def put_back(self, batch: list[Reserved]) -> None:
        for reserved in reversed(batch):
            self.ready[reserved.lane].appendleft(reserved)

    def drain(self) -> list[Reserved]:
        taken = [reserved for queue in self.ready.values() for reserved in queue]
        for queue in self.ready.values():
            queue.clear()
        return taken

    def stop(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(pool.stop(max(0.0, deadline - time.monotonic())) for pool in self.pools.values())

    def stats(self) -> dict[str, Any]:
        main = self.pools["main"]
        info = {"pool": main.kind, "concurrency": main.concurrency, **main.stats()}
        if "cpu" in self.pools:
            cpu = self.pools["cpu"]
            info.update(
                cpu_pool=cpu.kind,
                cpu_concurrency=cpu.concurrency,
                cpu_busy=cpu.running(),
                cpu_stats=cpu.stats(),
            )
        return info


class LazyPool:
    """A pool made and started on its first ``submit``; until then it reports free slots and
    runs nothing. Everything else is passed to the real pool once it exists."""

    def __init__(self, make: Callable[[], Pool], kind: str, concurrency: int) -> None:
        self.kind = kind
        self.concurrency = concurrency
        self._make = make
        self._pool: Pool | None = None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        """Nothing to start before the first task."""

    def _real(self) -> Pool:
        with self._lock:
            if self._pool is None:
                pool = self._make()
                pool.start()
                self._pool = pool
            return self._pool

    def free_slots(self) -> int:
        return self.concurrency if self._pool is None else self._pool.free_slots()

    def running(self) -> int:
        return 0 if self._pool is None else self._pool.running()

    def submit(self, job: Job, on_done: OnDone) -> None:
        self._real().submit(job, on_done)

    def stop(self, timeout_s: float | None) -> bool:
        return True if self._pool is None else self._pool.stop(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {"started": False} if self._pool is None else self._pool.stats()

    def __getattr__(self, name: str) -> Any:
        """``running_keys`` and ``terminate`` of the real pool (prefork), once it exists."""
        if name.startswith("_") or self.__dict__.get("_pool") is None:
            raise AttributeError(name)
        return getattr(self.__dict__["_pool"], name)
