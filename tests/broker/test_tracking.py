"""Changes (broker/tracking.py) on both Redis versions: a write to a delayed set or flow hash the
link has read wakes it, other keys do not; a lost subscriber or link connection makes tracking
untrusted until it is set up again, and changes made in between are seen."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from greenq import GreenQ
from greenq.broker.keys import Keys
from greenq.broker.probes import Probes
from greenq.broker.stack import Link
from greenq.broker.tracking import Changes
from greenq.exceptions import BrokerUnavailable

WAIT_S = 10.0  # how long a test waits for an event that must come


class Woken:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self) -> bool:
        found = self.event.wait(WAIT_S)
        self.event.clear()
        return found


def _until(condition: object, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.01)):
        if condition():  # type: ignore[operator]
            return
        done.wait(0.01)
    raise AssertionError(f"never happened: {what}")


@contextmanager
def _changes(url: str) -> Iterator[tuple[Link, Woken, Changes]]:
    """A link on ``url`` and its started ``Changes``, stopped and closed at the end."""
    link = GreenQ("tr", broker=url).broker.link()
    woken, stopping = Woken(), threading.Event()
    changes = Changes(link, woken)
    changes.start(stopping)
    try:
        yield link, woken, changes
    finally:
        stopping.set()
        changes.close()
        link.close()


def _client(r: redis.Redis, name: str) -> dict:
    [found] = [c for c in r.client_list() if c["name"] == name]
    return found


def test_a_write_to_a_read_delayed_set_or_flow_hash_wakes_the_link(any_redis_url: str) -> None:
    r = redis.Redis.from_url(any_redis_url)
    unstarted = Changes(GreenQ("tr", broker=any_redis_url).broker.link(), Woken())
    assert not unstarted.live() and unstarted.failed == "not started"
    with _changes(any_redis_url) as (link, woken, changes):
        assert woken.wait()  # subscribed: the link is to read its keys again
        assert changes.track() is True and changes.live()
        assert not changes.changed
        delayed = [Keys.delayed(f"t{i}") for i in range(3)]
        assert Probes(link).due(delayed) == ([], None)  # absent keys are tracked as well
        link.call("HGETALL", Keys.flow("t1"))
        link.call("GET", "greenq:unwatched")
        r.set("greenq:unwatched", "1")  # read, but not a delayed set or a flow hash: no wake-up
        r.zadd(delayed[2], {"m": 1})
        assert woken.wait() and changes.changed
        assert changes.track() is True and changes.live() and not changes.changed  # read everything
        r.hset(Keys.flow("t1"), "paused", "1")
        assert woken.wait() and changes.changed
        count = woken.count
        r.zadd(delayed[2], {"n": 2})  # not read since its last change: Redis says nothing
        r.hset(Keys.flow("t1"), "paused", "2")
        r.zadd(delayed[0], {"m": 1})  # read once, changed once: one message
        assert woken.wait() and woken.count == count + 1


def test_lost_connections_make_tracking_untrusted_until_it_is_set_up_again(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    key = Keys.delayed("lost")
    with _changes(redis_url) as (link, woken, changes):
        assert woken.wait() and changes.track() and changes.live()
        link.call("CLIENT", "SETNAME", "the-link")
        subscriber = next(c for c in r.client_list() if "P" in c["flags"])
        assert int(_client(r, "the-link")["redir"]) == int(subscriber["id"])
        # The subscriber's connection is killed: a new one, a new id, the link set up on it.
        r.client_kill_filter(_id=subscriber["id"])
        _until(lambda: changes._redirect not in (None, int(subscriber["id"])), "a new subscriber")
        assert not changes.live() and changes.changed  # told to read everything again
        assert changes.track() is True and changes.live()
        assert int(_client(r, "the-link")["redir"]) == changes._redirect
        link.call("ZRANGE", key, 0, 0)
        count = woken.count
        r.zadd(key, {"a": 1})
        _until(lambda: woken.count > count, "the change told to the new subscriber")
        # The link's connection is killed: it reconnects untracked, and says so.
        changes.track()
        r.client_kill_filter(_id=_client(r, "the-link")["id"])
        with pytest.raises(BrokerUnavailable):
            link.call("ZRANGE", key, 0, 0)
        link.call("ZRANGE", key, 0, 0)  # reconnects, untracked
        assert not changes.live()
        assert changes.track() is True and changes.live()
        link.call("ZRANGE", key, 0, 0)
        count = woken.count
        r.zadd(key, {"b": 2})
        _until(lambda: woken.count > count, "the change to a key read after the link reconnected")


def test_a_user_the_acl_refuses_tracking_falls_back_to_polling(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.execute_command("ACL", "SETUSER", "notrack", "on", ">pw", "~*", "&*", "+@all", "-client")
    url = redis_url.replace("redis://", "redis://notrack:pw@")
    try:
        with _changes(url) as (_, _, changes):
            _until(lambda: changes.failed is not None, "giving up")
            assert "no permissions" in str(changes.failed) and "client" in str(changes.failed)
            changes.track()
            assert not changes.live()
    finally:
        r.execute_command("ACL", "DELUSER", "notrack")
