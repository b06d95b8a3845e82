"""The client behind ``app.redis``: redis-py's, minus its per-command and per-checkout costs.

redis-py checks every connection at checkout (``can_read``: a poll of the socket, which under
gevent is a trip through the hub), records four observability counters per checkout and
release, and arms a timer for every blocking ``get`` from its queue; with hundreds of greenlets
each sending one short command, that is a large share of a worker's CPU (figures in
docs/benchmarks.md, "drain"). A connection interrupted mid-command is already disconnected by
redis-py itself (its read and send paths disconnect on any exception, a gevent ``Timeout``
included), so the poll guards nothing here. ``TaskRedis`` also skips the retry wrapper and
timing around each command.

In a gevent-patched process, plain commands go further: through one ``Multiplexer``
(greenq.redis_mux), which pipelines the commands of every greenlet over one connection.
Inside a task with a time limit or ``expires``, a command waits for its reply at most the
task's remaining time (``greenq.limits``), then raises redis-py's ``TimeoutError``.
Imports: redis, config (``mask_url``), limits; greenq.redis_mux only once gevent has patched the process.
"""

from __future__ import annotations

import contextlib
import sys
from queue import Empty, Full
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from greenq.broker.cluster import client as cluster_client
from greenq.broker.cluster import is_cluster
from greenq.broker.sentinel import connection_pool
from greenq.config import mask_url
from greenq.limits import remaining_s


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


# Commands that block, or change or depend on the state of their connection: never multiplexed.
POOLED_ONLY = frozenset(
    b"BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF SUBSCRIBE "
    b"PSUBSCRIBE SSUBSCRIBE MONITOR SELECT MULTI EXEC DISCARD WATCH UNWATCH AUTH HELLO RESET QUIT "
    b"READONLY READWRITE CLIENT HIMPORT SYNC PSYNC SHUTDOWN".decode().split()
)


_NAME_MULTIPLEXABLE: dict[Any, bool] = {}  # command name as passed -> may it be multiplexed?


def _multiplexable(args: tuple[Any, ...]) -> bool:
    name = args[0]
    allowed = _NAME_MULTIPLEXABLE.get(name)
    if allowed is None:
        word = (name.decode() if isinstance(name, bytes) else str(name)).upper().split(" ", 1)[0]
        allowed = _NAME_MULTIPLEXABLE[name] = word not in POOLED_ONLY
    if allowed and name in ("XREAD", "XREADGROUP", b"XREAD", b"XREADGROUP"):
        return not any(isinstance(a, (str, bytes)) and a.upper() in ("BLOCK", b"BLOCK") for a in args)
    return allowed


class TaskRedis(redis.Redis):
    """redis-py's client with its whole API; a plain command skips the per-command retry
    wrapper and observability timing (a third of an INCR's CPU here). A dropped connection is
    retried once on a fresh one; a timeout is not retried (the command may have run).

    In a gevent-patched process, commands from the hub's greenlets that neither block nor touch
    connection state are multiplexed (greenq.redis_mux); pipelines, transactions, pub/sub and
    calls from other native threads use the pool. A multiplexed command is never sent twice:
    one the connection dropped after writing raises ``ConnectionError``."""

    _mux: Any = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        mux = self._mux
        left = remaining_s()
        if left is not None and left <= 0:
            raise RedisTimeoutError(f"{args[0]}: the task's deadline has passed")
        if mux is not None and mux.here() and _multiplexable(args):
            return self._multiplexed(mux, args, options, left)
        send = getattr(self, "_send_command_parse_response", None)
        if send is None or self.connection is not None or self._single_connection_client:
            return super().execute_command(*args, **options)  # redis-py's own path
        pool = self.connection_pool
        conn = pool.get_connection()
        if left is not None and conn._sock is not None:
            conn._sock.settimeout(left)  # put back below: a pooled connection outlives the task
        try:
            try:
                return send(conn, args[0], *args, **options)
            except RedisConnectionError:
                conn.disconnect()
                return send(conn, args[0], *args, **options)
        finally:
            if left is not None and conn._sock is not None:
                conn._sock.settimeout(conn.socket_timeout)
            pool.release(conn)

    def _multiplexed(
        self, mux: Any, args: tuple[Any, ...], options: dict[str, Any], left: float | None
    ) -> Any:
        """One command through the multiplexer, its reply parsed as redis-py's ``parse_response``
        does. Not retried once written (see ``Multiplexer``): it may have run. With ``left`` (the
        task's remaining time) the wait is cut then; the late reply is read and dropped."""
        if left is None:
            reply = mux.execute(args)
        else:
            from gevent import Timeout  # noqa: TID251 - the multiplexer exists only under gevent

            with Timeout(left, RedisTimeoutError(f"{args[0]}: no reply within the task's deadline")):
                reply = mux.execute(args)
        if isinstance(reply, redis.exceptions.ResponseError):
            if "EMPTY_RESPONSE" in options:
                return options["EMPTY_RESPONSE"]
            raise reply
        options.pop("EMPTY_RESPONSE", None)
        options.pop("NEVER_DECODE", None)
        options.pop("keys", None)
        name = args[0]
        callback = self.response_callbacks.get(name)
        return callback(reply, **options) if callback is not None else reply


def task_client(url: str, size: int, wait_s: float, connect_timeout_s: float) -> redis.Redis:
    """A redis-py client on a ``TaskConnectionPool`` of ``size`` connections (on a Redis
    Cluster, redis-py's ``RedisCluster``, up to ``size`` connections per node)."""
    if is_cluster(url):
        return cluster_client(url, max_connections=size, socket_connect_timeout=connect_timeout_s)
    pool = connection_pool(
        TaskConnectionPool,
        url,
        max_connections=size,
        timeout=wait_s,
        socket_connect_timeout=connect_timeout_s,
    )
    client = TaskRedis(connection_pool=pool)
    if _gevent_patched():
        from greenq.redis_mux import Multiplexer

        client._mux = Multiplexer(pool.make_connection, f"app.redis {mask_url(url)}")
    return client


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))
