"""A greenq process's redis-py connections do not re-read redis-py's package metadata.

redis-py 8 looks its version up (for ``CLIENT SETINFO``) with ``importlib.metadata`` at every
new connection; greenq.broker.stack caches it once per process (half a connect's CPU).
"""

from __future__ import annotations

import importlib.metadata

import pytest
import redis
import redis.utils

import greenq.broker.stack  # noqa: F401 - importing it applies the cache, as in every greenq process


def test_new_connections_read_the_version_at_most_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.metadata.version
    looked_up: list[str] = []

    def counting(name: str) -> str:
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", counting)
    pool = redis.ConnectionPool.from_url(redis_url, max_connections=10)
    connections = [pool.make_connection() for _ in range(5)]
    for connection in connections:
        connection.connect()
        connection.send_command("PING")
        assert connection.read_response() in (b"PONG", "PONG")
    assert looked_up.count("redis") <= 1  # without the cache: once per connection, 5
    assert redis.utils.get_lib_version() == real("redis")
    for connection in connections:
        connection.disconnect()
