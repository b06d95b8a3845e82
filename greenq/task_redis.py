"""The client behind ``app.redis``: redis-py's, minus its per-command and per-checkout costs.

redis-py checks every connection at checkout (``can_read``: a poll of the socket, which under
gevent is a trip through the hub), records four observability counters per checkout and
release, and arms a timer for every blocking ``get`` from its queue. For 500 greenlets each
sending one short command, that was ~25 % of a worker's CPU in the drain benchmark. A
connection interrupted mid-command is already disconnected by redis-py itself (its read and
send paths disconnect on any exception, a gevent ``Timeout`` included), so the poll guards
nothing here. ``TaskRedis`` skips the retry wrapper and timing around each command. Together:
0.151 -> 0.112 ms of worker CPU per INCR task in the drain benchmark. Imports: redis.
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


class TaskRedis(redis.Redis):
    """redis-py's client with its whole API; a plain command skips the per-command retry
    wrapper and observability timing (a third of an INCR's CPU here). A dropped connection is
    retried once on a fresh one; a timeout is not retried (the command may have run)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        send = getattr(self, "_send_command_parse_response", None)
        if send is None or self.connection is not None or self._single_connection_client:
            return super().execute_command(*args, **options)  # redis-py's own path
        pool = self.connection_pool
        conn = pool.get_connection()
        try:
            try:
                return send(conn, args[0], *args, **options)
            except RedisConnectionError:
                conn.disconnect()
                return send(conn, args[0], *args, **options)
        finally:
            pool.release(conn)


def task_client(url: str, size: int, wait_s: float, connect_timeout_s: float) -> redis.Redis:
    """A redis-py client on a ``TaskConnectionPool`` of ``size`` connections."""
    pool = TaskConnectionPool.from_url(
        url, max_connections=size, timeout=wait_s, socket_connect_timeout=connect_timeout_s
    )
    return TaskRedis(connection_pool=pool)
