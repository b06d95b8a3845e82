"""Raw Redis connections: the producer's shared ``ConnectionStack`` and a worker thread's own
``Link``, plus the wire helpers both use (packing, one exchange, reply fields, Lua scripts).

redis-py's connection pool costs tens of microseconds per command on this path (a lock, a
health check and a ``can_read`` poll of the socket at every checkout), more than building the
message. Both users send whole pipelines and read every reply before they let go of a
connection, so they need none of that: the producer keeps a LIFO list of idle connections
(``list.pop`` and ``list.append`` are atomic) and a semaphore that caps how many exist; a worker
thread owns one connection outright. Imports: redis, config (URL masking), exceptions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.exceptions

from greenq.broker.cluster import ClusterRouter, Unsent, is_cluster
from greenq.broker.sentinel import connection_pool
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable


def cache_redis_lib_version() -> None:
    """Make redis-py look its own version up once per process instead of at every connect.

    NOTE: redis-py 8 reads its version from the installed package's metadata (``importlib.
    metadata``, which parses the METADATA file) for each new connection's ``CLIENT SETINFO``:
    about half the CPU a connect costs (docs/benchmarks.md). A worker's task bodies open one
    connection per task running at once; the version cannot change while the process runs.
    """
    import redis.utils

    lookup = getattr(redis.utils, "get_lib_version", None)
    if lookup is not None and not hasattr(lookup, "cache_info"):
        redis.utils.get_lib_version = cache(lookup)


cache_redis_lib_version()  # every greenq process imports this module before its first connect

_pack_one: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command several times faster than redis-py's own packer
    from hiredis import pack_command as _pack_one
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack_one = None


def pack(conn: Any, commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """The commands in the wire protocol, for ``conn.send_packed_command``. Packed by hiredis
    directly (args here are str, bytes and numbers); redis-py's packer, which goes over every
    argument in Python first, only for what hiredis refuses."""
    if _pack_one is not None:
        try:
            return [b"".join([_pack_one(tuple(command)) for command in commands])]
        except TypeError:
            pass  # redis-py's packer raises its own, clearer error
    return list(conn.pack_commands(commands))


def exchange(conn: Any, packed: list[bytes], count: int, url: str) -> list[Any]:
    """Send packed commands in one write and read ``count`` replies; error replies come back in
    place as ``ResponseError`` instances, except an ACL denial: a role without a permission it
    needs is a setup error that no caller can handle, so it raises ``BrokerError`` naming it.
    A network failure raises ``BrokerUnavailable``; it, or any interruption mid-reply (a gevent
    ``Timeout``), disconnects ``conn``, whose replies are then in an unknown state. Shared by the
    producer's stack and the worker's links."""
    try:
        conn.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        refused = None
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
                if refused is None and denied(exc):
                    refused = exc
        if refused is not None:
            raise BrokerError(f"broker {mask_url(url)}: {reason(refused)}")
        return replies
    except NETWORK_ERRORS as exc:
        conn.disconnect()
        raise BrokerUnavailable(f"broker {mask_url(url)} unavailable: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise


NETWORK_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def denied(reply: Exception) -> bool:
    """Did the Redis ACL refuse this command (NOPERM), or one a script ran (as 6.2 and 7 word it)?"""
    return isinstance(reply, redis.exceptions.NoPermissionError) or _SCRIPT_DENIED in str(reply)


_SCRIPT_DENIED = "The user executing the script can't"


def reason(reply: Exception) -> str:
    """An error reply as greenq says it: a denied ACL permission names itself and the way out."""
    if denied(reply):
        return (
            f"permission denied by the Redis ACL: {reply}; `greenq acl --role worker|producer|operator`"
            " prints the rule each role needs (docs/security.md)"
        )
    return str(reply)


class ConnectionStack:
    """At most ``limit`` raw connections made by ``make``; a caller beyond that waits up to
    ``wait_s`` for one to come back, then gets ``BrokerUnavailable``. Fork-safe: a child process
    starts with no connections instead of sharing its parent's sockets."""

    def __init__(self, url: str, make: Callable[[], Any], limit: int, wait_s: float) -> None:
        self.url = url
        self.limit = limit
        self._make = make
        self._wait_s = wait_s
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: list[Any] = []
        self._slots = threading.BoundedSemaphore(self.limit)

    def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send the commands in one write and read every reply (see ``exchange``)."""
        if self._pid != os.getpid():
            self._reset()
        if not self._slots.acquire(timeout=self._wait_s):
            raise BrokerUnavailable(
                f"broker {mask_url(self.url)}: all {self.limit} connections busy for "
                f"{self._wait_s:g} s (broker_pool_limit)"
            )
        try:
            conn = self._idle.pop() if self._idle else self._make()
            replies = exchange(conn, pack(conn, commands), len(commands), self.url)
            self._idle.append(conn)  # only after a clean exchange: a failed one dropped it
            return replies
        finally:
            self._slots.release()

    def call(self, *args: Any) -> Any:
        """One command; an error reply raises ``BrokerError``."""
        reply = self.execute([args])[0]
        if isinstance(reply, redis.exceptions.ResponseError):
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            raise BrokerError(f"{name} failed: {reason(reply)}")
        return reply

    def close(self) -> None:
        """Disconnect the idle connections; the next call connects again."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()


def text(value: Any) -> str:
    """A reply value (bytes under RESP2) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def field(flat: Sequence[Any], name: bytes) -> Any:
    """The value of ``name`` in a raw RESP2 field list [name, value, name, value, ...]."""
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return flat[i + 1]
    raise BrokerError(f"stream entry lacks field {name.decode()!r}: {flat!r}"[:300])


@cache
def script(name: str) -> str:
    """The text of ``scripts/<name>.lua`` (run with EVAL: Redis caches it by SHA, and a restarted
    server needs no SCRIPT LOAD)."""
    return resources.files("greenq.broker").joinpath("scripts").joinpath(f"{name}.lua").read_text()


class Link:
    """One dedicated Redis connection for one worker thread or greenlet.

    No pool checkout, no locks, no per-command health check: the owner sends whole pipelines
    and reads the replies. A broken connection raises ``BrokerUnavailable`` and reconnects on
    the next call.
    """

    cluster = False  # a Redis Cluster link routes each command to its slot's master (cluster.py)
    generation = 0  # connections made so far: state kept on one (CLIENT TRACKING) is gone after

    def __init__(self, url: str, connect_timeout_s: float, socket_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        if is_cluster(url):
            self.cluster = True
            timeouts = {"socket_connect_timeout": connect_timeout_s, "socket_timeout": socket_timeout_s}
            self._router = ClusterRouter(url, exchange, pack, health_check_interval=0, **timeouts)
            return
        pool = connection_pool(  # a Sentinel URL's link raises when the master moves (see sentinel.py)
            redis.ConnectionPool,
            url,
            raise_on_move=True,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            health_check_interval=0,
            protocol=2,
        )
        self._conn = pool.make_connection()
        self._conn.register_connect_callback(self._connected)  # kept as a weak method

    def _connected(self, conn: Any) -> None:
        self.generation += 1

    def pack(self, commands: Sequence[Sequence[Any]]) -> list[bytes]:
        """The commands in the wire protocol, for ``send`` (see ``pack``)."""
        return Unsent(commands) if self.cluster else pack(self._conn, commands)

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all commands in one write and read every reply; error replies are returned in place."""
        return self.send(self.pack(commands), len(commands))

    def send(self, packed: list[bytes], count: int) -> list[Any]:
        """Send commands packed by ``pack`` and read their ``count`` replies (see ``exchange``)."""
        if self.cluster:
            return self._router.execute(packed.commands)  # type: ignore[attr-defined]
        return exchange(self._conn, packed, count, self.url)

    def call(self, *args: Any) -> Any:
        """One command; an error reply raises ``BrokerError``."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, Exception):
            raise BrokerError(f"{text(args[0])} failed: {reason(reply)}")
        return reply

    def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run commands in MULTI/EXEC: all of them or none, in one round trip (on a cluster, one
        MULTI per slot, acks last: see cluster.py)."""
        if self.cluster:
            return self._router.transaction(commands)
        replies = self.pipeline([("MULTI",), *commands, ("EXEC",)])
        result = replies[-1]
        if isinstance(result, Exception) or result is None:
            # A command refused while queued (an ACL denial) says more than EXEC's EXECABORT.
            first = next((r for r in replies[1:-1] if isinstance(r, Exception)), result)
            raise BrokerError(f"transaction failed: {reason(first) if first else replies}")
        return list(result)

    def close(self) -> None:
        if self.cluster:
            self._router.close()
        else:
            self._conn.disconnect()
