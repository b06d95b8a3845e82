"""Upkeep: a worker's liveness round trips — heartbeat, recovery of dead workers' messages,
moving due delayed messages, the terminate flags of revoked tasks, and the unique keys a dead
worker's running tasks held.

Liveness comes from heartbeats, not from a timer on each message: a worker's unacked messages
are taken back only once its heartbeat key has expired (``recover.lua`` checks that
atomically). Imports: broker.keys, broker.stack, exceptions, message; never the worker or pools.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from greenq import shards
from greenq.broker.keys import GROUP, RECOVERED_TTL_MS, Keys, parse_stream_key
from greenq.broker.probes import Probes, band_major
from greenq.broker.stack import Link, script, text
from greenq.exceptions import BrokerError
from greenq.message import now

RECOVER_BATCH = 500  # entries per recover.lua call: keeps each script short
HELD_TTL_FACTOR = 4  # a worker's unique-held hash outlives its heartbeat key this many times


class Upkeep:
    """Liveness operations on the maintenance thread's own ``Link``."""

    def __init__(
        self,
        link: Link,
        dead_letter_max: int,
        shards: Mapping[str, int] | None = None,
        keys: type[Keys] = Keys,
    ) -> None:
        self.link = link
        self.dead_letter_max = dead_letter_max
        self.keys = keys  # the app's keyspace (its key_prefix)
        self.shards = shards or {}  # queue_shards: each queue's shards are looked after too
        self._probe: tuple[tuple[str, ...], list[bytes]] = ((), [])  # move_due's packed ZRANGEs
        self._exists_probe: tuple[tuple[str, ...], list[bytes]] = ((), [])  # recovery's EXISTS
        self._consumers_probe: tuple[tuple[str, ...], list[bytes]] = ((), [])  # and its XINFOs
        self.probes = Probes(link)  # on one Redis: one script and one reply per question
        self._bands: tuple[tuple[str, ...], tuple[str, ...], list[str]] = ((), (), [])
        self._delayed: tuple[tuple[str, ...], list[str]] = ((), [])

    def close(self) -> None:
        self.link.close()

    def heartbeat(
        self,
        consumer: str,
        info: bytes,
        ttl_ms: int,
        queues: Sequence[str],
        held: Mapping[str, str] | None = None,
    ) -> tuple[bool, list[str]]:
        """Refresh the worker's heartbeat. Returns (False if it had expired: others may have
        recovered this worker's messages; the task ids an operator asked about).

        ``held``: unique key -> task id of the early-ack unique tasks running now, written to
        ``Keys.unique_held`` (kept ``HELD_TTL_FACTOR`` heartbeat TTLs) for recovery to free if
        this worker dies; None: nothing to write (no extra command); empty: delete the hash.
        """
        commands: list[tuple[Any, ...]] = [
            ("SET", self.keys.worker(consumer), info, "PX", ttl_ms, "GET"),
            ("SADD", self.keys.WORKERS, consumer),
            ("SADD", self.keys.QUEUES, *queues),
            ("GET", self.keys.ask(consumer)),
        ]
        if held is not None:
            commands.append(("DEL", self.keys.unique_held(consumer)))
            if held:
                pairs = [part for key, task_id in held.items() for part in (key, task_id)]
                commands.append(("HSET", self.keys.unique_held(consumer), *pairs))
                commands.append(("PEXPIRE", self.keys.unique_held(consumer), ttl_ms * HELD_TTL_FACTOR))
        replies = self.link.pipeline(commands)
        asked: list[str] = []
        if isinstance(replies[3], bytes):
            with contextlib.suppress(ValueError):
                parsed = orjson.loads(replies[3])
                asked = [str(task_id) for task_id in parsed] if isinstance(parsed, list) else []
        return replies[0] is not None, asked

    def unregister(self, consumer: str) -> None:
        """A clean exit: drop the heartbeat so status stops listing the worker."""
        self.link.pipeline(
            [
                ("DEL", self.keys.worker(consumer)),
                ("SREM", self.keys.WORKERS, consumer),
                ("DEL", self.keys.unique_held(consumer)),
            ]
        )

    def recover(
        self, queues: Sequence[str], own_consumer: str, max_deliveries: int, min_idle_ms: int = 0
    ) -> tuple[int, list[bytes]]:
        """Requeue (or dead-letter) the unacked messages of consumers whose heartbeat is gone,
        those delivered at least ``min_idle_ms`` ago (a consumer that fetched a message since was
        alive then: see ``recover.lua``).

        Returns (how many were requeued, the bodies of those dead-lettered). Safe to run from
        many workers at once: the Lua script re-checks the heartbeat and acks each entry it moves.
        """
        requeued, dead = 0, []
        released: set[str] = set()
        for key, name in self._dead_consumers(shards.expand(queues, self.shards), own_consumer):
            if name not in released:  # before its entries: a failure here leaves it to retry
                self.release_held(name)
                released.add(name)
            queue, _ = parse_stream_key(key)
            left = 1
            while left > 0:
                moved, lettered, left = self.link.call(
                    "EVAL",
                    script("recover"),
                    5,
                    key,
                    self.keys.dead(queue),
                    self.keys.worker(name),
                    self.keys.dead_dropped(queue),
                    self.keys.recovered(queue),
                    GROUP,
                    name,
                    max_deliveries,
                    self.dead_letter_max,
                    int(now() * 1000),
                    RECOVER_BATCH,
                    RECOVERED_TTL_MS,
                    min_idle_ms,
                )
                requeued += int(moved)
                dead.extend(lettered)
            self.link.call("SREM", self.keys.WORKERS, name)
        return requeued, dead

    def release_held(self, consumer: str) -> int:
        """Free the unique keys a dead consumer's early-ack tasks held (its ``unique_held``
        hash), each only if that task still holds it, unless its heartbeat is back. Returns how
        many were freed (-1: the heartbeat is back)."""
        listed = self.link.call("HGETALL", self.keys.unique_held(consumer))
        if not listed:
            return 0
        keys, task_ids = [text(k) for k in listed[::2]], list(listed[1::2])
        return int(
            self.link.call(
                "EVAL",
                script("release_held"),
                2 + len(keys),
                self.keys.worker(consumer),
                self.keys.unique_held(consumer),
                *keys,
                *task_ids,
            )
        )

    def _dead_consumers(self, queues: Sequence[str], own_consumer: str) -> list[tuple[str, str]]:
        """(band stream, consumer) for every other consumer of these queues with no heartbeat."""
        # Runs every second on every band: packed once per list of queues.
        if tuple(queues) != self._bands[0]:
            streams = tuple(key for queue in queues for key in self.keys.bands(queue))
            self._bands = (tuple(queues), streams, band_major(streams, len(self.keys.bands(queues[0]))))
        _, streams, ordered = self._bands
        if not self.link.cluster:  # consumers.lua: one reply, naming only other consumers
            found = self.probes.other_consumers(ordered, GROUP, own_consumer)
            return self._heartbeats_gone([(ordered[i], name) for i, name in found])
        if streams != self._exists_probe[0]:
            self._exists_probe = (streams, self.link.pack([("EXISTS", key) for key in streams]))
        exists = self.link.send(self._exists_probe[1], len(streams))
        live = tuple(key for key, found in zip(streams, exists, strict=True) if found == 1)
        if not live:
            return []
        if live != self._consumers_probe[0]:
            packed = self.link.pack([("XINFO", "CONSUMERS", key, GROUP) for key in live])
            self._consumers_probe = (live, packed)
        infos = self.link.send(self._consumers_probe[1], len(live))
        candidates: list[tuple[str, str]] = []
        for key, info in zip(live, infos, strict=True):
            if isinstance(info, Exception):
                continue  # no group yet
            for consumer in info:
                fields = (
                    consumer
                    if isinstance(consumer, dict)
                    else dict(zip(consumer[::2], consumer[1::2], strict=True))
                )
                name = text(fields[b"name"])
                if name != own_consumer:
                    candidates.append((key, name))
        return self._heartbeats_gone(candidates)

    def _heartbeats_gone(self, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (band, consumer) candidates whose consumer has no heartbeat (one EXISTS each)."""
        if not candidates:
            return []
        names = list(dict.fromkeys(name for _, name in candidates))
        beats = self.link.pipeline([("EXISTS", self.keys.worker(name)) for name in names])
        gone = {name for name, beat in zip(names, beats, strict=True) if beat != 1}
        return [candidate for candidate in candidates if candidate[1] in gone]

    def move_due(self, queues: Sequence[str]) -> float | None:
        """Move due delayed messages into their streams; returns seconds until the next one is due.

        Runs on every change Redis tells of, when the soonest is due, and once a second (every
        100 ms without key tracking), so it first asks which delayed sets have a member due
        (``due.lua`` on one Redis; a pipeline of ``ZRANGE`` on a cluster, packed once) and runs
        ``schedule.lua`` only there: 100 idle queues cost Redis cheap reads, not 100 scripts
        (docs/keyspace.md, "Many queues")."""
        due, soonest = self._due(shards.expand(queues, self.shards))
        if not due:
            return soonest
        commands = []
        for queue in due:
            bands = self.keys.bands_ascending(queue)
            commands.append(
                ("EVAL", script("schedule"), 1 + len(bands), self.keys.delayed(queue), *bands, 1000)
            )
        for reply in self.link.pipeline(commands):
            if isinstance(reply, Exception):
                raise BrokerError(f"schedule failed: {reply}")
            moved, next_due, server_ms = (int(x) for x in reply)
            if moved >= 1000:
                return 0.0
            if next_due >= 0:
                wait = max(0.0, (next_due - server_ms) / 1000)
                soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    def _due(self, queues: Sequence[str]) -> tuple[list[str], float | None]:
        """The queues with a due delayed message, and seconds until the soonest of the others."""
        if not self.link.cluster:  # due.lua: one reply, naming only the queues with one due
            if tuple(queues) != self._delayed[0]:
                self._delayed = (tuple(queues), [self.keys.delayed(q) for q in queues])
            indexes, wait_s = self.probes.due(self._delayed[1])
            return [queues[i] for i in indexes], wait_s
        if tuple(queues) != self._probe[0]:
            probe = [("TIME",), *(("ZRANGE", self.keys.delayed(q), 0, 0, "WITHSCORES") for q in queues)]
            self._probe = (tuple(queues), self.link.pack(probe))
        replies = self.link.send(self._probe[1], len(queues) + 1)
        if isinstance(replies[0], Exception):
            raise BrokerError(f"TIME failed: {replies[0]}")
        server_ms = int(replies[0][0]) * 1000 + int(replies[0][1]) // 1000
        due: list[str] = []
        soonest: float | None = None
        for queue, first in zip(queues, replies[1:], strict=True):
            if isinstance(first, Exception):
                raise BrokerError(f"schedule failed: {first}")
            if first and float(first[1]) <= server_ms:
                due.append(queue)
            elif first:
                wait = (float(first[1]) - server_ms) / 1000
                soonest = wait if soonest is None else min(soonest, wait)
        return due, soonest

    def to_terminate(self, task_ids: Sequence[str]) -> list[str]:
        """Which of these running tasks were revoked with ``terminate=True``."""
        replies = self.link.pipeline([("GET", self.keys.revoked(task_id)) for task_id in task_ids])
        return [task_id for task_id, value in zip(task_ids, replies, strict=True) if value == b"terminate"]
