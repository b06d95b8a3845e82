"""Runs app.redis's multiplexer in a gevent-patched process (pytest's own is not patched) and
prints what each scenario saw as one JSON object: ``python -m tests.apps.mux_probe URL``.

tests/test_redis_mux.py asserts on it.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from greenq.task_redis import task_client  # noqa: E402

WAIT_S = 20.0
BUSY_300_MS = """
local t = redis.call('TIME') local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000
return 'slow'
"""


def wait_until(condition: Any, what: str) -> None:
    """Poll ``condition`` until true, yielding to the hub; fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        gevent.sleep(0.005)


def _in_command(watcher: redis.Redis, command: str) -> bool:
    """Does a connection of the probe's client wait in ``command`` on the server now?"""
    return any(c.get("name") == "mux-probe-client" and c.get("cmd") == command for c in watcher.client_list())


def own_replies(client: Any, greenlets: int) -> dict[str, Any]:
    """Every greenlet writes and reads its own keys, some get an error reply: does each caller
    get its own answer, parsed as redis-py parses it?"""

    def one(i: int) -> bool:
        key = f"own:{i}"
        ok = client.set(key, i) is True and client.incrby(key, i) == 2 * i
        ok = ok and client.get(key) == str(2 * i).encode()
        ok = ok and client.hset(f"h:{i}", mapping={"a": i}) == 1
        ok = ok and client.hgetall(f"h:{i}") == {b"a": str(i).encode()}
        ok = ok and client.zadd(f"z:{i}", {"m": i}) == 1
        ok = ok and client.zrange(f"z:{i}", 0, -1, withscores=True) == [(b"m", float(i))]
        if i % 10 == 0:
            try:
                client.hget(key, "field")  # WRONGTYPE, for this caller only
                return False
            except redis.ResponseError as exc:
                ok = ok and "WRONGTYPE" in str(exc)
        return ok

    jobs = [gevent.spawn(one, i) for i in range(greenlets)]
    gevent.joinall(jobs, raise_error=True)
    return {"all_correct": all(job.value for job in jobs), "count": len(jobs)}


def connections(client: Any, watcher: redis.Redis) -> dict[str, Any]:
    """How many connections did the multiplexed commands take: the pool's and the server's view."""
    names = [c.get("name") for c in watcher.client_list()]
    return {
        "pool_made": len(client.connection_pool._connections),
        "server_clients": names.count("mux-probe-client"),  # other tests' clients may linger
    }


def blocking_does_not_stall(client: Any, watcher: redis.Redis) -> dict[str, Any]:
    """A BLPOP (through the pool) waits while other greenlets' commands keep flowing."""
    popped = gevent.spawn(client.blpop, ["wake"], 10)
    wait_until(lambda: _in_command(watcher, "blpop"), "the BLPOP waits on the server")
    counted = [client.incr("flowing") for _ in range(100)]
    waiting = not popped.ready()
    watcher.rpush("wake", "go")
    popped.join(10)
    return {"incr_while_blocked": counted[-1], "was_waiting": waiting, "popped": popped.value[1].decode()}


def interrupted_caller(client: Any) -> dict[str, Any]:
    """A caller that gives up (gevent.Timeout) leaves its reply behind; the next caller must get
    its own reply, not the stale one."""
    timed_out = False
    try:
        with gevent.Timeout(0.05):
            client.eval(BUSY_300_MS, 0)
    except gevent.Timeout:
        timed_out = True
    client.set("after", "mine")
    return {"timed_out": timed_out, "next_reply": client.get("after").decode()}


def _incr_each(client: Any, prefix: str, count: int) -> tuple[list[gevent.Greenlet], list[str]]:
    """``count`` greenlets, greenlet i sends INCRBY prefix:i i; their outcomes, in finishing order."""
    outcomes: list[str] = []

    def one(i: int) -> None:
        try:
            outcomes.append("ok" if client.incrby(f"{prefix}:{i}", i) == i else "wrong")
        except redis.ConnectionError:
            outcomes.append("error")

    return [gevent.spawn(one, i) for i in range(count)], outcomes


def _ran_twice(watcher: redis.Redis, prefix: str, count: int) -> int:
    values = watcher.mget([f"{prefix}:{i}" for i in range(count)])
    return sum(1 for i, value in enumerate(values) if value is not None and int(value) != i)


def dropped_connection(client: Any, watcher: redis.Redis) -> dict[str, Any]:
    """The connection fails with 300 commands queued: first before the writer sent them (each is
    sent again on a new connection), then after (each gets ConnectionError, none runs twice);
    last the server kills the idle connection (the next command connects again). Each step
    waits for the state it needs (queued, written, blocked on the server), never for a time."""
    mux = client._mux
    jobs, unsent = _incr_each(client, "unsent", 300)
    gevent.sleep(0)  # each greenlet queues its command; the writer's wake-up comes after them
    unsent_queued = len(mux._out)
    mux.close()
    gevent.joinall(jobs)

    def blocked_caller() -> str:
        try:
            return str(mux.execute(("BLPOP", "never-pushed", WAIT_S)))
        except redis.ConnectionError:
            return "error"

    # A BLPOP sent on the multiplexed connection itself blocks that connection on the server:
    # commands written behind it are read by Redis but not run until it returns.
    blocker = gevent.spawn(blocked_caller)
    wait_until(lambda: _in_command(watcher, "blpop"), "the connection is blocked on the server")
    jobs, written = _incr_each(client, "written", 300)
    wait_until(lambda: len(mux._waiters) == 301 and not mux._out, "all 300 are written")
    queued = len(mux._out)
    mux._sock.shutdown(socket.SHUT_RDWR)
    gevent.joinall([*jobs, blocker])
    blocker_error = blocker.value == "error"

    client.incr("before-kill")  # connected again
    killed = watcher.client_kill_filter(_type="normal", skipme=True)
    wait_until(lambda: mux._sock is None, "the multiplexer noticed the server closed it")
    return {
        "unsent": {
            "queued_at_close": unsent_queued,
            "ok": unsent.count("ok"),
            "ran_twice": _ran_twice(watcher, "unsent", 300),
        },
        "written": {
            "queued_at_drop": queued,
            "errors": written.count("error") + blocker_error,
            "ran_twice": _ran_twice(watcher, "written", 300),
        },
        "killed": killed,
        "after_kill": client.incr("after-kill"),
    }


def forked_child(client: Any) -> dict[str, Any]:
    """A child forked after the multiplexer connected must not share its socket: it uses the
    pool, and the parent's connection keeps working."""
    client.incr("fork:parent")
    pid = os.fork()
    if pid == 0:
        try:
            ok = not client._mux.here() and client.incr("fork:child") == 1
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return {"child_exit": os.waitstatus_to_exitcode(status), "parent_after": client.incr("fork:parent")}


def main(url: str) -> None:
    client = task_client(f"{url}?client_name=mux-probe-client", size=5, wait_s=5.0, connect_timeout_s=5.0)
    watcher = redis.Redis.from_url(url, client_name="mux-probe")
    report = {"multiplexed": client._mux is not None}
    report["own_replies"] = own_replies(client, 300)
    report["connections"] = connections(client, watcher)
    report["blocking"] = blocking_does_not_stall(client, watcher)
    report["interrupted"] = interrupted_caller(client)
    report["dropped"] = dropped_connection(client, watcher)
    report["forked"] = forked_child(client)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
