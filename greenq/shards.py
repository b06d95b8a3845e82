"""Sharded queues: one hot queue spread over N streams, each its own hash slot (``queue_shards``).

``queue_shards = {"http": 8}`` makes shards ``http#0`` ... ``http#7``: each is a queue of its own
in Redis (``greenq:{q:http#3}:stream``, its delayed set, dead letters ...), so in Redis Cluster
the shards spread over the nodes. Producers pick a shard per message (``pick``); workers given
``-Q http`` read the queue and all its shards, starting each fetch at the next one in turn
(``expand``, ``rotate``); ``greenq status`` shows the queue once (``merge``). ``#`` cannot occur
in a queue name, so a shard never meets a user's queue. Imports: exceptions only (a settings-
layer module: config checks the setting with it).
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from greenq.exceptions import ConfigError

SEP = "#"
MAX_SHARDS = 1024
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}\Z")  # broker.keys.check_queue_name's rule


def check(value: Mapping[Any, Any], source: str) -> dict[str, int]:
    """The ``queue_shards`` setting: queue name -> shard count (2..1024)."""
    checked = {}
    for queue, count in value.items():
        if not isinstance(queue, str) or not _NAME.match(queue):
            raise ConfigError(f"setting 'queue_shards' (from {source}): invalid queue name {queue!r}")
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= MAX_SHARDS:
            raise ConfigError(
                f"setting 'queue_shards' (from {source}): {queue!r} got {count!r}; expected 2..{MAX_SHARDS}"
            )
        checked[queue] = count
    return checked


def check_limits(shards: Mapping[str, int] | None, rates: Mapping[str, Any] | None) -> None:
    """A queue rate limit is one bucket per queue, which a sharded queue's shards would not share:
    refused rather than enforced per shard (docs/scaling.md)."""
    both = sorted(set(shards or {}) & set(rates or {}))
    if both:
        raise ConfigError(
            f"queue {both[0]!r} is in both queue_shards and queue_rate_limits: a sharded queue"
            " has no queue rate limit (one bucket for all shards would put them back in one hash"
            " slot; docs/scaling.md)"
        )


def names(queue: str, count: int) -> list[str]:
    return [f"{queue}{SEP}{i}" for i in range(count)]


def base(queue: str) -> str:
    """``http#3`` -> ``http``; any other name as it is."""
    return queue.partition(SEP)[0]


def expand(queues: Sequence[str], shards: Mapping[str, int]) -> list[str]:
    """A worker's queues with each sharded one followed by its shards (the queue itself stays:
    a producer without the setting still reaches a worker)."""
    if not shards:
        return list(queues)
    return [name for q in queues for name in ([q, *names(q, shards[q])] if q in shards else [q])]


def rotate(queues: Sequence[str], turn: int) -> list[str]:
    """Each run of a sharded queue and its shards, started ``turn`` places further: successive
    fetches take from every shard in turn, while the order of different queues (``-Q``) holds."""
    out: list[str] = []
    for _, run in itertools.groupby(queues, key=base):
        group = list(run)
        start = turn % len(group)
        out += group[start:] + group[:start]
    return out


class Picker:
    """A producer's choice of shard: by ``key`` (the same key, the same shard: order per key,
    unique keys stay unique) or round robin."""

    def __init__(self) -> None:
        self._turns: dict[str, Iterator[int]] = {}

    def pick(self, queue: str, count: int, key: str | None) -> str:
        if key is not None:
            index = zlib.crc32(key.encode()) % count
        else:
            turns = self._turns.get(queue)
            if turns is None:
                turns = self._turns.setdefault(queue, itertools.count())
            index = next(turns) % count  # next() on a count is atomic under the GIL
        return f"{queue}{SEP}{index}"


_SUMMED = ("ready", "in_flight", "delayed", "dead", "dead_dropped")


def merge(queues: list[dict[str, Any]], detail: bool = False) -> list[dict[str, Any]]:
    """``greenq status`` rows with a sharded queue's rows (itself and ``NAME#i``) summed into one
    row named ``NAME``, with ``shards`` (how many) and, with ``detail``, ``per_shard`` (its rows)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in queues:
        groups.setdefault(base(row["name"]), []).append(row)
    merged = []
    for name, rows in groups.items():
        if len(rows) == 1 and rows[0]["name"] == name:
            merged.append(rows[0])
            continue
        own = next((r for r in rows if r["name"] == name), rows[0])  # the flow hash is the queue's
        row = {**own, "name": name, **{k: sum(r[k] for r in rows) for k in _SUMMED}}
        ages = [r["oldest_age_s"] for r in rows if r["oldest_age_s"] is not None]
        row["oldest_age_s"] = max(ages) if ages else None
        row["consumers"] = max(r["consumers"] for r in rows)
        row["paused"] = any(r.get("paused") for r in rows)
        row["shards"] = sum(1 for r in rows if r["name"] != name)
        if detail:
            row["per_shard"] = rows
        merged.append(row)
    return merged


def flatten(queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merged rows for the text table: each sharded queue named ``NAME (N shards)``, followed
    by its per-shard rows (indented) when ``merge`` kept them."""
    out = []
    for row in queues:
        if "shards" not in row:
            out.append(row)
            continue
        out.append({**row, "name": f"{row['name']} ({row['shards']} shards)"})
        out += [{**r, "name": f"  {r['name']}"} for r in row.get("per_shard", ())]
    return out
