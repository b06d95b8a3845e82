"""The broker: greenq's keyspace on Redis Streams and every round trip to it.

``keys`` names every key; ``stack`` holds the raw connections; ``redis.RedisBroker`` is the
producer's facade and makes each worker thread's ``channel.Channel`` (messages) and
``recovery.Upkeep`` (liveness). This module owns the ``Delivery`` record they hand the worker.
Knows nothing of workers or pools (the consumer sits between them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


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


def group_deliveries(
    reply: Sequence[Any], bands: Mapping[str, tuple[str, int]], per_band: int
) -> tuple[list[Delivery], bool]:
    """The deliveries of an ``XREADGROUP`` reply (``bands``: band stream -> (queue, priority)),
    and whether every band it answered for gave fewer than ``per_band`` (was left empty)."""
    deliveries: list[Delivery] = []
    drained = True
    for stream_key, entries in reply:
        stream = stream_key.decode() if isinstance(stream_key, bytes) else str(stream_key)
        queue, priority = bands[stream]
        drained = drained and len(entries) < per_band
        for entry_id, fields in entries:
            body, delivery_count = b"", 1
            for i in range(0, len(fields or ()), 2):
                if fields[i] == b"m":
                    body = fields[i + 1]
                elif fields[i] == b"d":
                    delivery_count = int(fields[i + 1])
            deliveries.append(Delivery(stream, entry_id.decode(), body, delivery_count, queue, priority))
    return deliveries, drained
