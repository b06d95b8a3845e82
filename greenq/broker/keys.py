"""greenq's Redis keyspace: every key name, the queue-name rule, and the layouts that put
messages into keys (enqueue commands, delayed-set members).

The only module that builds key names; docs/keyspace.md lists each key with the commands
that read and write it. Every key of one queue carries the hash tag ``{q:NAME}`` so that a
script or ``MULTI`` on one queue touches one Redis Cluster slot. Imports: config (the
key-prefix rule), message (priority range), exceptions; no Redis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from greenq.config import check_key_prefix
from greenq.exceptions import BrokerError, ConfigError
from greenq.message import PRIORITY_MAX, PRIORITY_MIN, Message, now

GROUP = "greenq"  # the one consumer group of every band stream
EVENTS_MAX = 100_000  # the events stream is capped at about this many entries
# A flush round's marker (Keys.flushed) outlives any reconnection that could still ask for it.
FLUSH_MARKER_TTL_MS = 3_600_000
RECOVERED_TTL_MS = 600_000  # how long a recovery marker (see ``Keys.recovered``) is kept
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}(#[0-9]{1,4})?\Z")  # NAME#i: a shard (greenq.shards)
_STREAM_KEY = re.compile(r"^[^:{}]+:\{q:(?P<queue>.+)\}:stream(?::p(?P<priority>\d))?\Z")


def check_queue_name(name: str) -> str:
    """Queue names are letters, digits and ``_ . : @ -``: they go inside a ``{}`` hash tag."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ConfigError(f"invalid queue name {name!r}: use letters, digits and _ . : @ -")
    return name


class Keys:
    """The only place greenq's Redis key names are built. Every name starts with the prefix
    (``key_prefix``, default ``greenq``): ``Keys`` itself builds the default's, and
    ``Keys.with_prefix(p)`` the same names under ``p``, so apps sharing one Redis never meet."""

    _prefix = "greenq"

    @classmethod
    @cache
    def with_prefix(cls, prefix: str) -> type[Keys]:
        """``Keys`` for names under ``prefix`` (built once per prefix; ``ConfigError`` if invalid)."""
        if prefix == Keys._prefix:
            return Keys
        check_key_prefix(prefix)
        constants = {
            name: prefix + value[len(Keys._prefix) :]
            for name, value in vars(Keys).items()
            if isinstance(value, str) and value.startswith(f"{Keys._prefix}:")
        }
        return type(f"Keys[{prefix}]", (Keys,), {"_prefix": prefix, **constants})

    @classmethod
    def stream(cls, queue: str, priority: int = 0) -> str:
        base = f"{cls._prefix}:{{q:{queue}}}:stream"
        return base if priority == 0 else f"{base}:p{priority}"

    @classmethod
    @cache
    def bands(cls, queue: str) -> tuple[str, ...]:
        """The queue's band streams, highest priority first (fetch order)."""
        return tuple(cls.stream(queue, p) for p in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1))

    @classmethod
    @cache
    def bands_ascending(cls, queue: str) -> tuple[str, ...]:
        """The queue's band streams by priority 0..9 (``schedule.lua`` indexes them so)."""
        return tuple(cls.stream(queue, p) for p in range(PRIORITY_MIN, PRIORITY_MAX + 1))

    @classmethod
    def delayed(cls, queue: str) -> str:
        return f"{cls._prefix}:{{q:{queue}}}:delayed"

    @classmethod
    def dead(cls, queue: str) -> str:
        return f"{cls._prefix}:{{q:{queue}}}:dead"

    @classmethod
    def dead_dropped(cls, queue: str) -> str:
        return f"{cls._prefix}:{{q:{queue}}}:dead:dropped"

    @classmethod
    def recovered(cls, queue: str) -> str:
        """Sorted set of ``<band stream>|<entry id>`` that ``recover.lua`` took from a consumer
        presumed dead, scored by the time in ms: ``start.lua`` must not let that consumer run
        them if it wakes up. Members older than ``RECOVERED_TTL_MS`` are trimmed on each write."""
        return f"{cls._prefix}:{{q:{queue}}}:recovered"

    @classmethod
    def schedule(cls, queue: str, schedule: str) -> str:
        """A periodic schedule's state: the last fire time claimed, its task id, who fired it.
        Under its queue's hash tag: ``fire.lua`` claims and enqueues in one script."""
        return f"{cls._prefix}:{{q:{queue}}}:schedule:{schedule}"

    @classmethod
    def unique(cls, queue: str, key: str) -> str:
        """A unique enqueue's key (docs/semantics.md): its value is the id of the task holding
        it, set with a TTL by ``enqueue_unique.lua`` (or ``fire.lua``) in the same script as the
        message, under the queue's hash tag; deleted when that task finishes."""
        return f"{cls._prefix}:{{q:{queue}}}:unique:{key}"

    @classmethod
    def unique_held(cls, consumer: str) -> str:
        """Hash unique key -> task id of the early-ack unique tasks a worker runs now, written
        with its heartbeat only while there are some: recovery frees them if the worker dies."""
        return f"{cls._prefix}:unique-held:{{{consumer}}}"

    @classmethod
    def result(cls, task_id: str) -> str:
        return f"{cls._prefix}:result:{{{task_id}}}"

    @classmethod
    def group(cls, group_id: str) -> str:
        """List of a group's member task ids (``greenq.canvas``), written with the members."""
        return f"{cls._prefix}:group:{{{group_id}}}"

    @classmethod
    def chord(cls, queue: str, chord_id: str) -> str:
        """Hash of one chord's state (docs/workflows.md): member count, the encoded body, each
        member's result, the first failure. Under the body's queue hash tag: ``chord.lua``
        counts a member and enqueues the body in one script (TTL ``result_expires``)."""
        return f"{cls._prefix}:{{q:{queue}}}:chord:{chord_id}"

    @classmethod
    def worker(cls, consumer: str) -> str:
        return f"{cls._prefix}:worker:{{{consumer}}}"

    @classmethod
    def flushed(cls, consumer: str) -> str:
        """The token of a worker's last flush round that had writes not safe to repeat (dead
        letters, workflow follow-ups), set in that round's ``MULTI``: after a lost reply it says
        whether the round landed (``Channel.flush_unless_landed``)."""
        return f"{cls._prefix}:flushed:{{{consumer}}}"

    @classmethod
    def ask(cls, consumer: str) -> str:
        """JSON list of task ids whose arguments an operator wants the worker to publish in its
        next heartbeats (``greenq inspect active --args``); set with a short TTL."""
        return f"{cls._prefix}:ask:{{{consumer}}}"

    @classmethod
    def revoked(cls, task_id: str) -> str:
        return f"{cls._prefix}:revoked:{{{task_id}}}"

    # ---- flow control (docs/flow-control.md): gate.lua and release.lua, under the queue's tag

    @classmethod
    def flow(cls, queue: str) -> str:
        """Hash of a queue's runtime controls: ``paused``, ``rate`` (``greenq queue pause|limit``)."""
        return f"{cls._prefix}:{{q:{queue}}}:flow"

    @classmethod
    def queue_rate(cls, queue: str) -> str:
        """The queue's rate bucket: the time (ms) of its next free slot."""
        return f"{cls._prefix}:{{q:{queue}}}:rate"

    @classmethod
    def rate(cls, queue: str, key: str) -> str:
        """A task's rate bucket (``key``: the task, or ``task|limit key``)."""
        return f"{cls._prefix}:{{q:{queue}}}:rate:{key}"

    @classmethod
    def paid(cls, queue: str) -> str:
        """Sorted set: task id -> the slot (ms) its rate-deferred message already holds."""
        return f"{cls._prefix}:{{q:{queue}}}:paid"

    @classmethod
    def lease(cls, queue: str, key: str) -> str:
        """Sorted set of a concurrency limit's leases: task id -> expiry (ms)."""
        return f"{cls._prefix}:{{q:{queue}}}:lease:{key}"

    @classmethod
    def parked(cls, queue: str, key: str) -> str:
        """List of messages waiting for a lease of ``key``: ``task id|band|deliveries|body``."""
        return f"{cls._prefix}:{{q:{queue}}}:parked:{key}"

    @classmethod
    def parked_names(cls, queue: str) -> str:
        """Set of the lease names that have parked messages (for the sweep of dead workers' leases)."""
        return f"{cls._prefix}:{{q:{queue}}}:parked"

    EVENTS = "greenq:events"
    WORKERS = "greenq:workers"
    QUEUES = "greenq:queues"


def parse_stream_key(key: str) -> tuple[str, int]:
    """``greenq:{q:http}:stream:p5`` -> ("http", 5), whatever the key prefix."""
    match = _STREAM_KEY.match(key)
    if not match:
        raise BrokerError(f"not a greenq stream key: {key!r}")
    return match["queue"], int(match["priority"] or 0)


def delayed_member(priority: int, body: bytes) -> bytes:
    """A delayed-set member: ``<priority>|<body>`` (``schedule.lua`` splits it at the first bar)."""
    return b"%d|%s" % (priority, body)


def delayed_command(message: Message, body: bytes, keys: type[Keys] = Keys) -> tuple[Any, ...]:
    """ZADD of a message to its queue's delayed set, due at ``message.eta``."""
    return (
        "ZADD",
        keys.delayed(message.queue),
        math.ceil((message.eta or 0) * 1000),
        delayed_member(message.priority, body),
    )


def enqueue_commands(
    chunk: Sequence[tuple[Message, bytes]], new_queues: Iterable[str], keys: type[Keys] = Keys
) -> list[tuple[Any, ...]]:
    """The commands that enqueue ``chunk``: ready messages to their band stream, future ones to
    the delayed set, and ``new_queues`` (not yet known to the caller) to the set of queues.
    A unique message (``message.unique``) is one ``EVAL`` of ``enqueue_unique.lua`` instead,
    whose reply is the id of the task holding its key. The sync and the asyncio producer send
    exactly this. Stream names come from the per-queue cache (``bands_ascending``), not built per
    message."""
    queues = sorted(new_queues)
    commands: list[tuple[Any, ...]] = [("SADD", keys.QUEUES, *queues)] if queues else []
    clock = now()
    for message, body in chunk:
        if message.unique is not None:
            commands.append(unique_command(message, body, clock, keys))
        elif message.eta is not None and message.eta > clock:
            commands.append(delayed_command(message, body, keys))
        else:
            stream = keys.bands_ascending(message.queue)[message.priority - PRIORITY_MIN]
            commands.append(("XADD", stream, "*", "m", body))
    return commands


def unique_command(message: Message, body: bytes, clock: float, keys: type[Keys] = Keys) -> tuple[Any, ...]:
    """EVAL of ``enqueue_unique.lua``: take the message's unique key and add the message (to its
    band stream, or the delayed set when its eta is in the future) only if the key was free."""
    from greenq.broker.stack import script  # only unique messages need the script text (and redis)

    delayed = message.eta is not None and message.eta > clock
    return (
        "EVAL",
        script("enqueue_unique"),
        2,
        keys.unique(message.queue, message.unique or ""),
        keys.delayed(message.queue) if delayed else keys.stream(message.queue, message.priority),
        message.id,
        max(1, message.unique_ttl_ms),
        body,
        math.ceil((message.eta or 0) * 1000) if delayed else "",
        delayed_member(message.priority, body) if delayed else b"",
    )
