"""Multiplexer: the Redis commands of many greenlets over one connection, pipelined by themselves.

Under gevent a lone command costs a ``send`` and a ``recv`` system call and two trips through the
hub, which is most of a small command's CPU (docs/http-tasks.md has the figures). Here every
command issued while the writer is busy
rides in its next write, and one read brings back many replies, so the system calls are shared by
everyone waiting (the technique of ioredis' auto-pipelining and redis-rs' multiplexed
connection). Redis answers one connection's commands in the order they came, so a FIFO of
waiters matches each reply to its caller.

For plain request/reply commands only: ``TaskRedis`` sends blocking commands, transactions and
anything that changes connection state through its pool. Gevent only (one hub, greenlets).
Imports: gevent, hiredis, redis (for the handshake and its error classes).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock
import hiredis
from gevent.hub import Waiter, get_hub
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse

READ_SIZE = 65536


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in the wire protocol, as redis-py packs it (a first argument with spaces, such
    as ``"CLIENT LIST"``, is several words); arguments hiredis refuses raise ``DataError``."""
    first = args[0]
    if isinstance(first, str) and " " in first:
        args = (*first.split(), *args[1:])
    try:
        return hiredis.pack_command(args)
    except TypeError as exc:
        raise DataError(f"invalid argument for Redis: {exc}") from None


class Multiplexer:
    """One connection shared by every greenlet of the hub that made it.

    A writer greenlet sends whatever callers queued since its last write in one ``sendall``; a
    reader greenlet parses replies and hands each to the next waiter. When the connection fails,
    a command already written gets ``ConnectionError`` (it may have run: it is not sent twice),
    one not yet written is sent again on a new connection. An idle connection the server closed
    is noticed by the reader at once, so the next command simply connects again. A caller
    interrupted while it waits (``gevent.Timeout``, a task's time limit) leaves its waiter
    behind: its reply is read in turn and dropped.
    """

    def __init__(self, make_connection: Callable[[], Any], name: str) -> None:
        self._make_connection = make_connection
        self._name = name
        self.hub = get_hub()
        self._pid = os.getpid()
        self._lock = gevent.lock.Semaphore()
        self._conn: Any = None  # redis-py's connection: it did the handshake (AUTH, SELECT ...)
        self._stale: Callable[[], bool] | None = None  # has its server stopped being the master?
        self._sock: Any = None
        self._out: list[bytes] = []  # packed commands the writer has not sent yet
        self._waiters: deque[Waiter] = deque()  # one per command queued or sent, in send order
        self._wake = gevent.event.Event()
        self._loops: list[gevent.Greenlet] = []

    def here(self) -> bool:
        """Is the caller on this multiplexer's hub, in the process that made it? (Not in another
        native thread, nor in a forked child, which must not share the parent's socket.)"""
        return get_hub() is self.hub and os.getpid() == self._pid

    def execute(self, args: tuple[Any, ...]) -> Any:
        """Send one command and wait for its reply; an error reply is returned, not raised."""
        return self._send(pack(args))

    def _send(self, packed: bytes) -> Any:
        if self._sock is None:
            self._connect()
        elif self._stale is not None and self._stale():  # a Sentinel failover (greenq.broker.sentinel)
            self._fail(self._sock, RedisConnectionError("the master moved"))
            self._connect()
        waiter = Waiter(self.hub)
        self._waiters.append(waiter)
        self._out.append(packed)
        if len(self._out) == 1:
            self._wake.set()
        reply = waiter.get()
        if isinstance(reply, _Failed):
            if reply.unsent:
                return self._send(packed)
            raise reply.error
        return reply

    def _connect(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            conn = self._make_connection()
            conn.connect()
            self._conn, self._sock = conn, conn._sock
            self._stale = getattr(conn, "stale", None)
            reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
            self._loops = [
                gevent.spawn(self._write_loop, self._sock),
                gevent.spawn(self._read_loop, self._sock, reader),
            ]

    def _write_loop(self, sock: Any) -> None:
        out = self._out
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                while out:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    out.clear()  # nothing runs between the join and the clear: no lost command
                    sock.sendall(data)
        except Exception as exc:
            self._fail(sock, exc)

    def _read_loop(self, sock: Any, reader: Any) -> None:
        buffer = bytearray(READ_SIZE)
        waiters, deliver = self._waiters, self._deliver
        try:
            while True:
                count = sock.recv_into(buffer)
                if not count:
                    raise RedisConnectionError("connection closed by the server")
                reader.feed(buffer, 0, count)
                batch = []
                reply = reader.gets()
                while reply is not False:
                    if not waiters:
                        raise InvalidResponse(f"a reply no command asked for: {reply!r}"[:200])
                    batch.append((waiters.popleft(), reply))
                    reply = reader.gets()
                if batch:
                    self.hub.loop.run_callback(deliver, batch)
        except Exception as exc:
            self._fail(sock, exc)

    @staticmethod
    def _deliver(batch: list[tuple[Waiter, Any]]) -> None:
        for waiter, reply in batch:  # in the hub: each switch runs its caller until it yields
            waiter.switch(reply)

    def _fail(self, sock: Any, exc: Exception) -> None:
        """Close the connection: commands written get ``ConnectionError``, the rest are sent again."""
        if sock is not self._sock:
            return
        conn, loops = self._conn, self._loops
        self._conn = self._sock = None
        self._loops = []
        error = RedisConnectionError(f"{self._name}: connection lost: {exc}")
        written = len(self._waiters) - len(self._out)  # the unsent commands are the newest
        batch = [(waiter, _Failed(error, i >= written)) for i, waiter in enumerate(self._waiters)]
        self._waiters.clear()
        self._out.clear()
        self._wake.clear()
        current = gevent.getcurrent()
        for loop in loops:
            if loop is not current:
                loop.kill(block=False)
        conn.disconnect()
        if batch:
            self.hub.loop.run_callback(self._deliver, batch)

    def close(self) -> None:
        """Disconnect; commands in flight fail, the next one connects again."""
        if self._sock is not None:
            self._fail(self._sock, RedisConnectionError("closed by the client"))


class _Failed:
    """What a waiter gets instead of a reply when the connection failed; ``unsent``: its command
    was never written, so sending it again cannot run it twice."""

    __slots__ = ("error", "unsent")

    def __init__(self, error: Exception, unsent: bool) -> None:
        self.error, self.unsent = error, unsent
