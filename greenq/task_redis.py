"""The connection pool behind ``app.redis``: redis-py's ``BlockingConnectionPool`` minus its
per-checkout costs.

redis-py checks every connection at checkout (``can_read``: a poll of the socket, which under
gevent is a trip through the hub), records four observability counters per checkout and
release, and arms a timer for every blocking ``get`` from its queue. For 500 greenlets each
sending one short command, that was ~25 % of a worker's CPU in the drain benchmark. A
connection interrupted mid-command is already disconnected by redis-py itself (its read and
send paths disconnect on any exception, a gevent ``Timeout`` included), so the poll guards
nothing here. Imports: redis.
"""

from __future__ import annotations

import contextlib
from queue import Empty, Full
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError


class TaskConnectionPool(redis.BlockingConnectionPool):
    """Up to ``max_connections`` connections shared by every task of a process; a caller waits
    up to ``timeout`` seconds for a free one. Fork-safe as redis-py's pools are."""

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        self._checkpid()
        try:
            connection = self.pool.get_nowait()  # the common case: no timer, no hub
        except Empty:
            try:
                connection = self.pool.get(block=True, timeout=self.timeout)
            except Empty:
                raise RedisConnectionError(
                    f"no free connection in {self.timeout} s (app.redis: {self.max_connections})"
                ) from None
        if connection is None:
            connection = self.make_connection()
        try:
            connection.connect()  # returns at once when already connected
        except BaseException:
            self.release(connection)
            raise
        return connection

    def release(self, connection: Any) -> None:
        self._checkpid()
        if not self.owns_connection(connection):
            connection.disconnect()
            self.pool.put_nowait(None)
            return
        with contextlib.suppress(Full):  # a connection made before a resize; let it go
            self.pool.put_nowait(connection)


def task_client(url: str, size: int, wait_s: float, connect_timeout_s: float) -> redis.Redis:
    """A redis-py client on a ``TaskConnectionPool`` of ``size`` connections."""
    pool = TaskConnectionPool.from_url(
        url, max_connections=size, timeout=wait_s, socket_connect_timeout=connect_timeout_s
    )
    return redis.Redis(connection_pool=pool)
