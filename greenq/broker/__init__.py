"""The broker boundary: what the producer, results and the consumer ask of a message store.

Owns the ``Delivery`` record and the ``Broker`` protocol. Knows nothing of workers or pools
(the consumer sits between them). The one implementation is ``greenq.broker.redis``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from greenq.message import Message


@dataclass(frozen=True)
class Delivery:
    """One reserved message: where it came from and how often it was handed out.

    ``deliveries`` is 1 on first delivery and grows each time a dead worker's message is
    recovered; at ``max_deliveries`` the message is dead-lettered instead.
    """

    stream: str
    entry_id: str
    body: bytes
    deliveries: int
    queue: str
    priority: int


class Connection(Protocol):
    """A dedicated broker connection owned by one worker thread or greenlet."""

    def close(self) -> None: ...


class Broker(Protocol):
    """Producer-side and worker-side operations; every method is one or a few round trips."""

    url: str

    def enqueue(self, items: Sequence[tuple[Message, bytes]]) -> None: ...
    def read_result(self, task_id: str) -> bytes | None: ...
    def wait_result(self, task_id: str, timeout_s: float | None) -> bytes | None: ...
    def forget(self, task_id: str) -> None: ...
    def connect(self, role: str) -> Any: ...
    def fetch(
        self, link: Any, queues: Sequence[str], consumer: str, count: int, block_ms: int
    ) -> list[Delivery]: ...
    def reserve(
        self,
        link: Any,
        queues: Sequence[str],
        consumer: str,
        count: int,
        block_ms: int,
        drained: bool = False,
    ) -> tuple[list[Delivery], bool]: ...
    def flush(
        self, link: Any, acks: Sequence[Delivery], results: Sequence[tuple[str, bytes]], result_ttl_ms: int
    ) -> None: ...
    def requeue(self, link: Any, deliveries: Sequence[Delivery]) -> int: ...
    def dead_letter(self, link: Any, delivery: Delivery, reason: str, consumer: str) -> None: ...
    def heartbeat(
        self, link: Any, consumer: str, info: bytes, ttl_ms: int, queues: Sequence[str]
    ) -> bool: ...
    def recover(
        self, link: Any, queues: Sequence[str], own_consumer: str, max_deliveries: int
    ) -> tuple[int, int]: ...
    def move_due(self, link: Any, queues: Sequence[str]) -> float | None: ...
    def unregister(self, link: Any, consumer: str) -> None: ...
