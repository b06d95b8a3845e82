"""A flush round whose reply was lost is written again: the parts of it that are not idempotent
must not land twice (found reviewing the chaos run for making "dead-lettered twice" a violation).

The flusher keeps a failed round and rewrites it whole. Results, acks and delayed retries are
idempotent; a dead letter (``dead.lua``: XADD) and a workflow follow-up (a chain's next step:
XADD) are not. A cut between Redis running the round's MULTI and its reply reaching the worker
(the chaos run's ``cut`` fault, or a Redis crash after the write) then writes them twice.

The proxy here forwards every byte both ways, except that the first request carrying ``marker``
has its replies dropped; once the test sees the round's effect in Redis it cuts that connection,
so the worker learns the round failed only after it was applied. With ``lose_request`` the
request itself is dropped instead: the round never landed, and must be written on the retry.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from greenq import chain
from greenq.broker.keys import Keys
from tests.apps import basic

DEAD_LUA = b"dead.lua: append one dead letter"  # the first line of the script, sent with EVAL


class ReplyLosingProxy:
    """127.0.0.1 TCP proxy to Redis that loses the reply to the first request with ``marker``
    (or, with ``lose_request``, that request itself)."""

    def __init__(self, target_port: int, marker: bytes, lose_request: bool = False) -> None:
        self.target_port = target_port
        self.marker = marker
        self.lose_request = lose_request
        self.marked = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = True
        self.held: tuple[socket.socket, socket.socket] | None = None  # (client side, server side)
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, server]
            pair = (client, server)
            threading.Thread(target=self._up, args=pair, daemon=True).start()
            threading.Thread(target=self._down, args=pair, daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        """Worker -> Redis: forward all; the first chunk with the marker marks its connection."""
        try:
            while data := client.recv(65536):
                with self.lock:
                    if self.armed and self.marker in data:
                        self.armed, self.held = False, (client, server)
                        self.marked.set()
                        if self.lose_request:
                            continue
                    lost = self.lose_request and self.held is not None and self.held[0] is client
                if not lost:
                    server.sendall(data)
        except OSError:
            pass
        _close(server)

    def _down(self, client: socket.socket, server: socket.socket) -> None:
        """Redis -> worker: forward all, except on the marked connection (its replies are lost)."""
        try:
            while data := server.recv(65536):
                with self.lock:
                    lost = self.held is not None and self.held[0] is client
                if not lost:
                    client.sendall(data)
        except OSError:
            pass
        _close(client)

    def cut_held(self) -> None:
        """Close the marked connection: the worker sees it drop with no reply."""
        assert self.held is not None, "no request carried the marker"
        for sock in self.held:
            _close(sock)

    def close(self) -> None:
        _close(self.listener)
        with self.lock:
            for sock in self.sockets:
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def losing_proxy(redis_url: str) -> Iterator[type[ReplyLosingProxy]]:
    made: list[ReplyLosingProxy] = []
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]

    def make(marker: bytes, lose_request: bool = False) -> ReplyLosingProxy:
        proxy = ReplyLosingProxy(port, marker, lose_request)
        made.append(proxy)
        return proxy

    yield make  # type: ignore[misc]
    for proxy in made:
        proxy.close()


def _until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (generous timeout: a shared 2-core machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_flush_round_whose_reply_was_lost_writes_its_dead_letter_once(
    app, r: redis.Redis, start_worker, losing_proxy
) -> None:
    proxy = losing_proxy(DEAD_LUA)
    worker = start_worker("-c", "1", url=proxy.url)
    result = basic.fail_to_dead.delay("lost reply")
    dead = Keys.dead("default")
    _until(lambda: r.xlen(dead) >= 1, "the dead letter")  # the round ran; its reply is lost
    proxy.cut_held()
    worker.wait_for("flush: broker is back")  # the round was written again
    assert result.state == "FAILURE"
    entries = r.xrange(dead)
    assert len(entries) == 1, [(f[b"reason"], f[b"worker"]) for _, f in entries]


def test_a_flush_round_that_never_reached_redis_writes_its_dead_letter_on_the_retry(
    app, r: redis.Redis, start_worker, losing_proxy
) -> None:
    proxy = losing_proxy(DEAD_LUA, lose_request=True)
    worker = start_worker("-c", "1", url=proxy.url)
    result = basic.fail_to_dead.delay("lost request")
    assert proxy.marked.wait(30), "the round never came"
    assert r.xlen(Keys.dead("default")) == 0  # dropped: nothing landed
    proxy.cut_held()
    worker.wait_for("flush: broker is back")
    assert result.state == "FAILURE"
    assert r.xlen(Keys.dead("default")) == 1


def test_a_flush_round_whose_reply_was_lost_starts_a_chains_next_step_once(
    app, r: redis.Redis, start_worker, losing_proxy
) -> None:
    marker = b"next-step-after-a-lost-reply"
    proxy = losing_proxy(marker)
    worker = start_worker("-c", "1", url=proxy.url)
    last = chain(basic.add.si(1, 2), basic.count_run.si(marker.decode())).apply_async()
    first_id = last.parent.id
    # The first step's result and the next step's XADD are one MULTI: the result means both ran.
    _until(lambda: r.exists(Keys.result(first_id)), "the first step's result")
    proxy.cut_held()
    worker.wait_for("flush: broker is back")
    assert last.get(timeout=30) == last.id
    # A second copy of the next step, if any, was added before this one; -c 1 runs them in order.
    sentinel = basic.count_run.delay("sentinel")
    assert sentinel.get(timeout=30) == sentinel.id
    runs = {k.decode(): int(v) for k, v in r.hgetall(f"runs:{marker.decode()}").items()}
    assert runs == {last.id: 1}, runs
