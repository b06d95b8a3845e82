"""RedisBroker: the producer's facade on greenq's keyspace — enqueue, results, revocation —
and the factory of each worker thread's ``Channel`` and ``Upkeep``.

Thread- and greenlet-safe: producer calls go through a shared stack of raw connections
(``stack.ConnectionStack``); admin tools get a redis-py client. Key names come from
``broker.keys``, worker round trips live in ``broker.channel`` (messages) and
``broker.recovery`` (liveness). redis-py errors are translated into greenq's here.
Imports: redis, broker.*, config, exceptions, message; must not import the worker or pools.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions

from greenq.broker import cluster
from greenq.broker.channel import Channel
from greenq.broker.cluster import ClusterStack, is_cluster
from greenq.broker.keys import Keys, enqueue_commands
from greenq.broker.recovery import Upkeep
from greenq.broker.sentinel import connection_pool
from greenq.broker.stack import NETWORK_ERRORS, ConnectionStack, Link, exchange, field, pack, script, text
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable
from greenq.message import Message, now

ENQUEUE_CHUNK = 5000
PROGRESS_KEPT = 1000  # about how many state records a result stream keeps (store_results.lua)
RESULT_READ = 1000  # the most records one read of a result stream returns


def wait_slices(timeout_s: float | None, socket_timeout_s: float) -> Iterator[int]:
    """BLOCK milliseconds for successive XREADs that together wait ``timeout_s`` (None: for
    ever). Each ends well before the socket timeout would call a live server dead."""
    slice_ms = max(1, int(max(socket_timeout_s - 1.0, socket_timeout_s / 2) * 1000))
    deadline = None if timeout_s is None else now() + timeout_s
    while True:
        if deadline is None:
            yield slice_ms
            continue
        left_ms = int((deadline - now()) * 1000)
        if left_ms <= 0:
            return
        yield min(slice_ms, left_ms)


class RedisBroker:
    """The producer's side of Redis Streams, shared by every thread and greenlet of a process;
    ``channel()`` and ``upkeep()`` give a worker thread operations on a connection of its own."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        socket_timeout_s: float = 10.0,
        dead_letter_max: int = 10000,
        pool_limit: int = 1000,
        queue_shards: Mapping[str, int] | None = None,
        key_prefix: str = "greenq",
    ) -> None:
        self.url = url
        self.queue_shards = dict(queue_shards or {})  # workers read each queue's shards too
        self.keys = Keys.with_prefix(key_prefix)  # every key name this app's broker uses
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.dead_letter_max = dead_letter_max
        self._known_queues: set[str] = set()
        timeouts = {"socket_connect_timeout": connect_timeout_s, "socket_timeout": socket_timeout_s}
        if is_cluster(url):  # each command to its slot's master (cluster.py)
            self.client: Any = cluster.client(url, protocol=2, **timeouts)
            self.conns: Any = ClusterStack(url, exchange, pack, pool_limit, socket_timeout_s, **timeouts)
            return
        # RESP2 everywhere: reply shapes must not change with the redis-py version's default.
        # A blocking pool: with more concurrent callers than connections (hundreds of greenlets
        # waiting in get()), callers wait for a free connection instead of failing.
        pool = connection_pool(
            redis.BlockingConnectionPool,
            url,
            max_connections=pool_limit,
            timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            protocol=2,
        )
        # Admin and tools: the full redis-py API (typed Any: its replies are unions with Awaitable).
        self.client = redis.Redis(connection_pool=pool)
        # Enqueue and result reads: the hot producer path, on raw connections (see stack.py).
        self.conns = ConnectionStack(url, pool.make_connection, pool_limit, socket_timeout_s)

    def __repr__(self) -> str:
        return f"RedisBroker({mask_url(self.url)!r})"

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Translate redis-py errors at the boundary; the URL is shown with its password masked."""
        try:
            yield
        except NETWORK_ERRORS as exc:
            raise BrokerUnavailable(f"broker {mask_url(self.url)} unavailable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"broker {mask_url(self.url)}: {exc}") from exc

    # ---- producer side -------------------------------------------------------------

    def enqueue(
        self, items: Sequence[tuple[Message, bytes]], first: Sequence[tuple[Any, ...]] = ()
    ) -> list[str]:
        """Add messages: ready ones to their band stream, future ones to the delayed set.

        Pipelined in chunks of ``ENQUEUE_CHUNK`` messages per round trip, without MULTI: a
        failure part way raises ``BrokerUnavailable`` and earlier chunks stay enqueued.
        ``first``: commands that ride in the first round trip, before the messages (a group's
        member list). Returns the task id of each item: its own, except for a unique message
        whose key another task holds (nothing was added for it): that task's id.
        """
        ids = [message.id for message, _ in items]
        for start in range(0, len(items), ENQUEUE_CHUNK):
            chunk = items[start : start + ENQUEUE_CHUNK]
            new_queues = {message.queue for message, _ in chunk} - self._known_queues
            commands = [*(first if start == 0 else ()), *enqueue_commands(chunk, new_queues, self.keys)]
            replies = self.conns.execute(commands)
            failed = next((r for r in replies if isinstance(r, redis.exceptions.ResponseError)), None)
            if failed is not None:
                raise BrokerError(f"broker {mask_url(self.url)}: enqueue failed: {failed}")
            self._known_queues.update(message.queue for message, _ in chunk)
            offset = len(commands) - len(chunk)  # a leading SADD of new queues
            for index, (message, _) in enumerate(chunk):
                if message.unique is not None:
                    ids[start + index] = text(replies[offset + index])
        return ids

    def read_result(self, task_id: str) -> bytes | None:
        """The latest state payload of a task, or None (PENDING or expired)."""
        entries = self.conns.call("XREVRANGE", self.keys.result(task_id), "+", "-", "COUNT", 1)
        return field(entries[0][1], b"r") if entries else None

    def wait_result(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> tuple[str, bytes] | None:
        """Block until the task's result stream gets an entry newer than ``after``.

        Blocks in Redis (XREAD BLOCK), woken by the worker's write: no polling. Waits in slices
        shorter than the socket timeout so a dead server is still noticed. Returns
        (entry id, payload) or None on timeout.
        """
        entries = self.wait_entries(task_id, timeout_s, after)
        return entries[-1] if entries else None

    def wait_entries(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> list[tuple[str, bytes]]:
        """``wait_result``, but every record newer than ``after`` (progress updates, then the final
        one), oldest first, up to ``RESULT_READ`` per call; [] on timeout."""
        key = self.keys.result(task_id)
        for block_ms in wait_slices(timeout_s, self.socket_timeout_s):
            reply = self.conns.call("XREAD", "COUNT", RESULT_READ, "BLOCK", block_ms, "STREAMS", key, after)
            if reply:
                return [(text(entry_id), field(fields, b"r")) for entry_id, fields in reply[0][1]]
        return []

    def forget(self, task_id: str) -> None:
        with self.guard():
            self.client.delete(self.keys.result(task_id))

    def store_progress(self, task_id: str, payload: bytes, ttl_ms: int = 86_400_000) -> bool:
        """Write a custom state record (``update_state``) unless the task already has a final
        one (``progress.lua``); True if written."""
        key = self.keys.result(task_id)
        return bool(
            self.conns.call("EVAL", script("progress"), 1, key, max(1, ttl_ms), payload, PROGRESS_KEPT)
        )

    def revoke(self, task_ids: Sequence[str], ttl_s: float, terminate: bool = False) -> None:
        """Mark tasks revoked for ``ttl_s``: any worker, also one started later, skips them.
        With ``terminate`` the value is ``terminate``: a running one in a child process is killed."""
        with self.guard():
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.set(self.keys.revoked(task_id), "terminate" if terminate else "1", px=int(ttl_s * 1000))
            pipe.execute()

    def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the server answers."""
        with self.guard():
            self.client.ping()

    # ---- worker side: each thread gets its own connection ------------------------------

    def link(self, block_s: float = 0.0) -> Link:
        """A dedicated connection; ``block_s`` is the longest BLOCK its owner will use."""
        return Link(self.url, self.connect_timeout_s, max(self.socket_timeout_s, block_s + 5.0))

    def channel(self, block_s: float = 0.0) -> Channel:
        """Message operations (reserve, start, flush ...) on a new dedicated connection."""
        return Channel(self.link(block_s), self.dead_letter_max, self.queue_shards, self.keys)

    def upkeep(self, link: Link | None = None) -> Upkeep:
        """Liveness operations (heartbeat, recovery, due mover) on ``link`` or a new connection."""
        return Upkeep(link or self.link(), self.dead_letter_max, self.queue_shards, self.keys)
