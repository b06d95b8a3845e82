"""The broker: greenq's keyspace on Redis Streams and every round trip to it.

``keys`` names every key; ``stack`` holds the raw connections; ``redis.RedisBroker`` is the
producer's facade and makes each worker thread's ``channel.Channel`` (messages) and
``recovery.Upkeep`` (liveness). This module owns the ``Delivery`` record they hand the worker.
Knows nothing of workers or pools (the consumer sits between them).
"""

from __future__ import annotations

from typing import NamedTuple


class Delivery(NamedTuple):
    """One reserved message: where it came from and how often it was handed out.

    ``deliveries`` is 1 on first delivery and grows each time a dead worker's message is
    recovered; at ``max_deliveries`` the message is dead-lettered instead. A named tuple, not a
    frozen dataclass: one is made per message fetched, and a frozen dataclass takes three times
    as long to build.
    """

    stream: str
    entry_id: str
    body: bytes
    deliveries: int
    queue: str
    priority: int
