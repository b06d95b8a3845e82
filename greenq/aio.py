"""AsyncRedisBroker: the producer's round trips on ``redis.asyncio``, for asyncio services.

A thin second transport beside ``RedisBroker``. It builds nothing: messages come from
``greenq.producer.Producer`` (the one code path for routing, validation and encoding), are laid
out by the same ``broker.keys.enqueue_commands`` as ``RedisBroker.enqueue``, and redis errors
are translated by ``RedisBroker.guard`` (``BrokerUnavailable`` with the URL masked). What it owns
is write combining: enqueues made while a pipeline is in flight wait for the next one, so
``asyncio.gather`` of a thousand ``adelay()`` calls costs a few round trips, not a thousand.

One instance per event loop (``GreenQ.async_broker``): redis.asyncio connections belong to
the loop that opened them. On Redis Cluster the round trips go through ``AsyncClusterRouter``
(``broker.cluster_aio``): each command to its slot's master, a pipeline per node. Imports:
redis.asyncio, broker.keys, broker.cluster*, broker.redis (the sync broker it is built from,
``wait_slices``), message; never gevent, the worker or pools.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio
import redis.exceptions

from greenq.broker.cluster import is_cluster
from greenq.broker.cluster_aio import AsyncClusterRouter
from greenq.broker.keys import enqueue_commands
from greenq.broker.redis import RedisBroker, wait_slices
from greenq.broker.sentinel import connection_pool
from greenq.exceptions import ConfigError
from greenq.message import Message

# Messages per pipeline. Packing commands is synchronous, so this bounds how long one send
# holds the event loop (a few ms); bigger batches go out in several pipelines.
PIPELINE_MESSAGES = 250


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AsyncRedisBroker:
    """Enqueue and wait for results on redis.asyncio; built from the app's ``RedisBroker``
    (for its URL, timeouts and error translation), and opening no connection until used."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._pending: deque[tuple[Sequence[tuple[Message, bytes]], asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._known_queues: set[str] = set()
        self._conn: redis.asyncio.connection.AbstractConnection | None = None
        timeouts: dict[str, Any] = {
            "socket_connect_timeout": broker.connect_timeout_s,
            "socket_timeout": broker.socket_timeout_s,
        }
        self.router: AsyncClusterRouter | None = None
        self.client: Any = None  # one Redis: the redis.asyncio client of result waits
        if is_cluster(broker.url):  # each command to its slot's master (broker/cluster_aio.py)
            limit = broker.conns.limit
            self.router = AsyncClusterRouter(broker.url, limit, broker.socket_timeout_s, **timeouts)
            return
        # As many connections as the sync broker's pool may open (each waiting aget() holds one);
        # callers beyond that wait for a free one, up to the socket timeout, then BrokerUnavailable.
        # (An unbounded sync pool reports 2**31: cap it, as older redis-py preallocates the slots.)
        limit = min(getattr(broker.client.connection_pool, "max_connections", None) or 1000, 10_000)
        pool = connection_pool(
            redis.asyncio.BlockingConnectionPool,
            broker.url,
            max_connections=limit,
            timeout=broker.socket_timeout_s,
            protocol=2,
            **timeouts,
        )
        self.client = redis.asyncio.Redis(connection_pool=pool)

    def __repr__(self) -> str:
        return f"Async{self.broker!r}"

    # ---- enqueue: write combining -----------------------------------------------------

    async def enqueue(self, items: Sequence[tuple[Message, bytes]]) -> None:
        """Send messages as ``RedisBroker.enqueue`` does; returns once Redis has them.

        Joins the next pipeline of this loop. Cancelled before that pipeline is sent: nothing
        is sent; cancelled after: the messages may be enqueued all the same.

        Raises:
            BrokerUnavailable: Redis cannot be reached (every call in that pipeline gets it).
            BrokerError: Redis answered with an error.
        """
        if any(message.unique is not None for message, _ in items):
            # NOTE: the combined pipeline answers no per-call ids, and a duplicate must return
            # the holder's id; until it does, refuse rather than hand back an id that never runs.
            raise ConfigError("unique enqueue is not supported from asyncio yet: call it in a thread")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, done))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await done

    def _take(self) -> list[tuple[Sequence[tuple[Message, bytes]], asyncio.Future[None]]]:
        """The next batch: queued calls (skipping cancelled ones) up to PIPELINE_MESSAGES, at least one."""
        batch: list[tuple[Sequence[tuple[Message, bytes]], asyncio.Future[None]]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= PIPELINE_MESSAGES):
            items, done = self._pending.popleft()
            if not done.cancelled():
                batch.append((items, done))
                size += len(items)
        return batch

    async def _flush(self) -> None:
        batch: list[tuple[Sequence[tuple[Message, bytes]], asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    await self._send([item for items, _ in batch for item in items])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(_copy(exc))
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
                batch = []
        except asyncio.CancelledError:  # the loop is shutting down: nobody is left to answer
            for _, done in [*batch, *self._pending]:
                done.cancel()
            self._pending.clear()
            raise
        finally:
            self._flusher = None

    async def _send(self, items: Sequence[tuple[Message, bytes]]) -> None:
        """Pipelines on the flusher's own connection (no pool checkout per batch), as ``Link``;
        on a cluster, one per node (``AsyncClusterRouter``)."""
        with self.broker.guard():
            for start in range(0, len(items), PIPELINE_MESSAGES):
                chunk = items[start : start + PIPELINE_MESSAGES]
                queues = {message.queue for message, _ in chunk}
                commands = enqueue_commands(chunk, queues - self._known_queues, self.broker.keys)
                if self.router is not None:
                    replies = await self.router.execute(commands)
                    errors: list[Exception] = [r for r in replies if isinstance(r, Exception)]
                else:
                    errors = await self._pipeline(commands)
                if errors:
                    raise errors[0]
                self._known_queues |= queues

    async def _pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Exception]:
        """One pipeline on one Redis; the error replies."""
        if self._conn is None:
            self._conn = self.client.connection_pool.make_connection()
        conn = self._conn
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            errors: list[Exception] = []
            for _ in commands:
                try:
                    await conn.read_response()
                except redis.exceptions.ResponseError as exc:
                    errors.append(exc)
        except BaseException:
            await conn.disconnect()  # a reply may be half read: start afresh next time
            raise
        return errors

    # ---- results -------------------------------------------------------------------------

    async def wait_result(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> tuple[str, bytes] | None:
        """``RedisBroker.wait_result``, awaited: XREAD BLOCK on the task's result stream, woken
        by the worker's write (no polling), in slices shorter than the socket timeout. Each
        waiting call holds one connection of the pool while it blocks."""
        entries = await self.wait_entries(task_id, timeout_s, after)
        return entries[-1] if entries else None

    async def wait_entries(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> list[tuple[str, bytes]]:
        """``RedisBroker.wait_entries``, awaited: every record newer than ``after``, oldest first."""
        key = self.broker.keys.result(task_id)
        with self.broker.guard():
            for block_ms in wait_slices(timeout_s, self.broker.socket_timeout_s):
                if self.router is not None:
                    reply: Any = await self.router.xread(key, after, block_ms)
                else:
                    reply = await self.client.xread({key: after}, count=1000, block=block_ms)
                if reply:
                    return [(_text(entry_id), fields[b"r"]) for entry_id, fields in reply[0][1]]
        return []

    async def aclose(self) -> None:
        """Close this loop's connections."""
        if self.router is not None:
            await self.router.aclose()
            return
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
        await self.client.connection_pool.disconnect()


def _copy(exc: Exception) -> Exception:
    """One error per waiting caller: raising a shared instance from many tasks would chain
    their tracebacks onto one object."""
    try:
        fresh = type(exc)(*exc.args)
    except Exception:
        return exc
    fresh.__cause__ = exc.__cause__
    return fresh
