"""A task module written the way a new user writes one: a module-level redis-py client with
redis-py's default pool (100 connections in redis-py 8), used by a gevent worker running
more tasks at once than that."""

from __future__ import annotations

import os

import redis

from greenq import GreenQ

app = GreenQ("exhaust")
client = redis.Redis.from_url(os.environ["GREENQ_BROKER_URL"])


@app.task
def hold_connection(seconds: float) -> None:
    """Keep one connection of the module's pool busy for ``seconds`` (BLPOP on a key nobody fills)."""
    client.blpop(["exhaust:never"], timeout=seconds)
