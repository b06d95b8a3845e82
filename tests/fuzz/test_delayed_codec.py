"""The delayed-set member codec (``<priority>|<body>``, greenq/broker/keys.py) against the real
``schedule.lua``: any body (bars, NUL, invalid UTF-8) at any priority comes out of the delayed
set into its band stream byte for byte, and never before its eta."""

from __future__ import annotations

import time

import redis
from hypothesis import given
from hypothesis import strategies as st

from greenq.broker.keys import Keys, delayed_command, delayed_member
from greenq.broker.recovery import Upkeep
from greenq.broker.stack import Link
from greenq.message import Message
from tests.fuzz.strategies import FUZZ


def test_any_member_moves_to_its_band_byte_for_byte(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    upkeep = Upkeep(Link(redis_url, 5, 5), 100)

    @FUZZ
    @given(st.integers(0, 9), st.binary(max_size=300) | st.just(b"|") | st.just(b"0|1|2"))
    def prop(priority: int, body: bytes) -> None:
        client.flushall()
        client.zadd(Keys.delayed("q"), {delayed_member(priority, body): 0})
        upkeep.move_due(["q"])
        entries = client.xrange(Keys.stream("q", priority))
        assert [fields[b"m"] for _, fields in entries] == [body]
        assert client.zcard(Keys.delayed("q")) == 0

    try:
        prop()
    finally:
        upkeep.close()


@FUZZ
@given(st.floats(min_value=time.time(), max_value=4e9, allow_nan=False))
def test_a_delayed_message_is_never_due_before_its_eta(eta: float) -> None:
    """Found by the fuzzer: the score was the eta in ms rounded down, so ``schedule.lua`` (which
    moves members whose score is at most the server's time in ms) could move a message up to a
    millisecond before its eta."""
    command = delayed_command(Message(id="x", task="t", eta=eta), b"{}")
    assert command[2] >= eta * 1000
