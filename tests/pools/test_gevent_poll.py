"""``select.poll`` after greenq's patch (``greenq.pools.gevent_poll``), in child processes: this
test process is not monkey-patched. Each child prints one JSON line of what it observed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, select, socket, sys
    if sys.argv[1] == "greenq":
        from greenq.pools.gevent import patch
        patch()
    else:
        from gevent import monkey
        monkey.patch_all()
    import gevent

    ran = []
    a, b = socket.socketpair()
    poller = select.poll()
    poller.register(a, select.POLLIN)
    gevent.spawn(ran.append, "other")  # runs at the hub's next turn
    empty = poller.poll(0)
    other_ran_during_zero_poll = bool(ran)
    b.send(b"x")
    ready = poller.poll(0)
    poller.modify(a, select.POLLOUT)
    writable = poller.poll(0)
    poller.unregister(a)
    after_unregister = poller.poll(0)

    poller.register(a, select.POLLIN)
    a.recv(1)
    def later():
        gevent.sleep(0.01)
        ran.append("sender")
        b.send(b"y")
    gevent.spawn(later)
    waited = poller.poll(5000)  # a positive timeout still waits in the hub
    print(json.dumps({
        "ours": getattr(select.poll, "_greenq", False),
        "empty": empty,
        "other_ran_during_zero_poll": other_ran_during_zero_poll,
        "ready": ready,
        "writable": writable,
        "after_unregister": after_unregister,
        "waited": waited,
        "sender_ran": "sender" in ran,
        "fd": a.fileno(),
        "POLLIN": select.POLLIN,
        "POLLOUT": select.POLLOUT,
    }))
    """
)


def observe(patcher: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, patcher], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_zero_timeout_poll_asks_the_kernel_and_does_not_run_other_greenlets() -> None:
    seen = observe("greenq")
    fd, pollin, pollout = seen["fd"], seen["POLLIN"], seen["POLLOUT"]
    assert seen["ours"] is True
    assert seen["empty"] == []
    assert seen["other_ran_during_zero_poll"] is False  # no trip through the hub
    assert seen["ready"] == [[fd, pollin]]
    assert seen["writable"] == [[fd, pollout]]  # modify() reached the kernel poll object
    assert seen["after_unregister"] == []
    assert seen["waited"] == [[fd, pollin]] and seen["sender_ran"] is True  # cooperative wait


def test_gevents_own_zero_timeout_poll_runs_the_hub_which_greenqs_patch_avoids() -> None:
    """The contrast the patch exists for: with gevent's poll, poll(0) lets other greenlets run."""
    seen = observe("gevent")
    assert seen["ours"] is False
    assert seen["other_ran_during_zero_poll"] is True
    assert seen["ready"] == [[seen["fd"], seen["POLLIN"]]]


def test_redis_py_commands_from_many_greenlets_under_the_patch(redis_url: str) -> None:
    """redis-py checks each pooled connection with poll(0) before a command: 50 greenlets x 40
    INCRs through one client end at exactly 2,000."""
    script = textwrap.dedent(
        f"""
        from greenq.pools.gevent import patch
        patch()
        import gevent, redis
        client = redis.Redis.from_url({redis_url!r}, max_connections=60)
        client.delete("poll-probe")
        def work():
            for _ in range(40):
                client.incr("poll-probe")
        gevent.joinall([gevent.spawn(work) for _ in range(50)], raise_error=True)
        print(int(client.get("poll-probe")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2000"
