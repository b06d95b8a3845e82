"""A worker presumed dead that wakes up and rejects its copy of a message recovery already gave
to another worker must not dead-letter it a second time (found by the chaos run, seed 2024)."""

from __future__ import annotations

import redis

from greenq.broker import Delivery
from greenq.broker.channel import Channel
from greenq.broker.keys import GROUP, Keys
from greenq.broker.recovery import Upkeep
from greenq.broker.stack import Link


def test_a_message_recovered_from_a_presumed_dead_worker_is_dead_lettered_once(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    stream = Keys.stream("default")
    r.xgroup_create(stream, GROUP, "0", mkstream=True)
    r.xadd(stream, {"m": b"poison"})
    [(_, [(old_id, _)])] = r.xreadgroup(GROUP, "zombie", {stream: ">"})  # then its heartbeat lapsed
    upkeep = Upkeep(Link(redis_url, 5, 5), 100)
    upkeep.recover(["default"], "other", 5)  # the other worker takes the message back...
    [(_, [(new_id, _)])] = r.xreadgroup(GROUP, "other", {stream: ">"})
    channel = Channel(Link(redis_url, 5, 5), 100)
    channel.dead_letter(Delivery(stream, new_id.decode(), b"poison", 2, "default", 0), "malformed", "other")
    # ...and the zombie wakes up and rejects its own copy: acked, not dead-lettered again
    channel.dead_letter(Delivery(stream, old_id.decode(), b"poison", 1, "default", 0), "malformed", "zombie")
    (letter,) = r.xrange(Keys.dead("default"))
    assert letter[1][b"worker"] == b"other" and letter[1][b"reason"] == b"malformed"
    assert r.xlen(stream) == 0 and r.xpending(stream, GROUP)["pending"] == 0
