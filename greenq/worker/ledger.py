"""Ledger: the state a worker's threads share — its places, its running tasks, the entries it
holds — and the one lock and condition that guard it.

Every loop of the consumer reads or changes this, so it lives here alone, with its owners
written down. Imports: broker (Delivery), worker.lanes; no Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from greenq.broker import Delivery
from greenq.worker.lanes import Lanes, Reserved


class Ledger:
    """A worker's places and holdings.

    Who owns what (threads are greenlets once gevent has patched ``threading``):

    * ``cond`` — a plain Lock (gevent makes the default RLock Python-level code, and nothing
      here takes it twice) with a Condition the fetcher and the dispatcher wait on.
    * ``held`` — messages this worker holds: reserved + running + finished with the outcome not
      yet written. Raised by the fetcher, lowered by the flusher (``release``) and by the
      dispatcher for messages it will not run; under ``cond``.
    * ``owned`` — (stream, entry id) of every message held unacked; anything else the broker
      lists in this consumer's pending entries is an orphan. Under ``cond``.
    * ``lanes.ready`` — reserved messages per lane; under ``cond``.
    * ``running`` — key -> Reserved of tasks handed to a pool. Written only by the dispatcher
      (add) and the pool's completion callback (remove); single dict operations, no lock.
      Readers (heartbeat, hard exit) take a ``list()`` copy.
    """

    def __init__(self, lanes: Lanes, capacity: int) -> None:
        self.lanes = lanes
        self.capacity = capacity
        self.cond = threading.Condition(threading.Lock())
        self.held = 0
        self.owned: set[tuple[str, str]] = set()
        self.running: dict[int, Reserved] = {}

    def free(self) -> int:
        """Places the fetcher may fill (call under ``cond``)."""
        return self.capacity - self.held

    def startable(self) -> int:
        """How many more tasks may start: a finished task keeps its place until its outcome is
        written, so a SIGKILL can never lose the outcomes of more than ``concurrency`` tasks
        (running, or finished with the result still in this process). Call under ``cond``."""
        return self.lanes.concurrency - (self.held - self.lanes.reserved())

    def admit(self, accepted: Sequence[Reserved]) -> None:
        """Take newly reserved messages into their lanes and wake the dispatcher."""
        with self.cond:
            self.held += len(accepted)
            for reserved in accepted:
                self.lanes.ready[reserved.lane].append(reserved)
            self.owned.update([(r.delivery.stream, r.delivery.entry_id) for r in accepted])
            self.cond.notify_all()

    def release(self, count: int) -> None:
        """Free ``count`` places (outcomes written, or messages not run) and wake the fetcher."""
        with self.cond:
            self.held -= count
            self.cond.notify_all()

    def disown(self, deliveries: Iterable[Delivery]) -> None:
        """Forget entries that are acked or returned: they are no longer this worker's."""
        with self.cond:
            self.owned.difference_update([(d.stream, d.entry_id) for d in deliveries])

    def orphans(self, pending: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The entries of ``pending`` this worker does not hold (a fetch reply that was lost)."""
        with self.cond:
            return [entry for entry in pending if entry not in self.owned]

    def take_reserved(self) -> list[Reserved]:
        """Empty every lane's reserved queue (graceful stop) and give their places back."""
        with self.cond:
            returned = self.lanes.drain()
            self.held -= len(returned)
        return returned

    def wake_all(self) -> None:
        with self.cond:
            self.cond.notify_all()
