"""A worker on many queues (issue 23, item 5): a wake-up costs the same round trips for 20 or
100 queues as for one, in -Q order; an idle worker's probes answer for every queue in one reply,
and its round trips and commands do not grow with its queues (counted, never timed); a real
worker drains what was sent over 100 queues."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson
import redis

from greenq import GreenQ
from greenq.broker.keys import GROUP, Keys
from greenq.broker.probes import CONSUMERS_CHUNK, Probes, band_major

QUEUES = [f"q{i}" for i in range(20)]  # 200 band streams: past wake.BLOCK_ALL_MAX


def _calls(r: redis.Redis, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def _when_blocked(r: redis.Redis, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` once the reserve under test is blocked in Redis."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while int(r.info("clients")["blocked_clients"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _args(deliveries: list) -> list:
    return [(d.queue, orjson.loads(d.body)["args"][0]) for d in deliveries]


def test_a_wake_up_on_twenty_queues_runs_one_fetch_and_a_refill_only_where_messages_are(
    redis_url: str, r: redis.Redis
) -> None:
    app = GreenQ("many", broker=redis_url)
    channel = app.broker.channel(1.0)
    for queue in QUEUES:  # each queue has had a default-priority message: its band 0 exists
        app.send_task("t.x", [queue], queue=queue)
    got, drained = channel.reserve(QUEUES, "c1", 200, 0)
    assert [q for q, _ in _args(got)] == QUEUES and drained  # in -Q order
    assert channel.reserve(QUEUES, "c1", 200, 20, drained=True) == ([], True)  # waited, timed out
    # Waiting on more bands (20) than it may reserve (10): XREAD on the tails, then one fetch.lua,
    # not one per queue; three XREADs: (after the timed-out wait) one look without blocking at
    # the bands the wait leaves out, the wait, and the same look as it ends.
    evals, reads = _calls(r, "eval"), _calls(r, "xread")
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["woke"], queue="q17"))
    got, drained = channel.reserve(QUEUES, "c1", 10, 5000, drained=True)
    thread.join()
    assert _args(got) == [("q17", "woke")] and drained
    assert (_calls(r, "eval") - evals, _calls(r, "xread") - reads) == (1, 3)
    assert channel.reserve(QUEUES, "c1", 200, 20, drained=True) == ([], True)
    # On no more bands than it may reserve, the wait is XREADGROUP COUNT 1: it reserves as it
    # wakes, no fetch.lua; the look before it and the one that rides with it are the XREADs.
    evals, reads, groups = _calls(r, "eval"), _calls(r, "xread"), _calls(r, "xreadgroup")
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["woke again"], queue="q11"))
    got, drained = channel.reserve(QUEUES, "c1", 200, 5000, drained=True)
    thread.join()
    assert _args(got) == [("q11", "woke again")] and drained
    counts = (_calls(r, "eval") - evals, _calls(r, "xread") - reads, _calls(r, "xreadgroup") - groups)
    assert counts == (0, 2, 1)
    # The look that rode with it saw q11's new entry: the next call fetches from q11 (fetch.lua).
    app.send_task("t.x", ["more"], queue="q11")
    got, drained = channel.reserve(QUEUES, "c1", 200, 5000, drained=True)
    assert _args(got) == [("q11", "more")]
    # A wake-up with no look: the band that woke it stays in the wait, and a message sent since
    # is taken by the next wait at once (">": never delivered), still without fetch.lua.
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["again"], queue="q11"))
    got, drained = channel.reserve(QUEUES, "c1", 200, 5000, drained=True)
    thread.join()
    app.send_task("t.x", ["and more"], queue="q11")
    evals, groups = _calls(r, "eval"), _calls(r, "xreadgroup")
    more, drained = channel.reserve(QUEUES, "c1", 200, 5000, drained=True)
    assert _args(got + more) == [("q11", "again"), ("q11", "and more")] and drained
    assert (_calls(r, "eval") - evals, _calls(r, "xreadgroup") - groups) == (0, 1)
    # Busy refill: one non-blocking XREAD finds the two queues that got messages since; fetch.lua
    # runs on those only and on q11 (its tail is behind what the waits took), in -Q order.
    app.send_task("t.x", ["b"], queue="q9")
    app.send_task("t.x", ["a"], queue="q3")
    evals, reads = _calls(r, "eval"), _calls(r, "xread")
    got, _ = channel.reserve(QUEUES, "c1", 200, 0)
    assert _args(got) == [("q3", "a"), ("q9", "b")]
    assert (_calls(r, "eval") - evals, _calls(r, "xread") - reads) == (3, 1)


def test_the_first_message_at_a_new_priority_is_taken_by_the_next_wait(
    redis_url: str, r: redis.Redis
) -> None:
    """Past BLOCK_ALL_MAX bands, a wait names only bands that have had messages (and priority
    0): a message at a priority never used before is found by the next call, not lost."""
    app = GreenQ("many", broker=redis_url)
    channel = app.broker.channel(1.0)
    assert channel.reserve(QUEUES, "c1", 200, 0) == ([], True)
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["p7"], queue="q4", priority=7))
    first, _ = channel.reserve(QUEUES, "c1", 200, 300, drained=True)
    thread.join()
    got = first or channel.reserve(QUEUES, "c1", 200, 300, drained=True)[0]
    assert [(d.queue, d.priority) for d in got] == [("q4", 7)]
    assert r.xlen(Keys.stream("q4", 7)) == 1  # reserved (pending), not acked


def test_a_worker_on_a_hundred_queues_drains_them_all(app: GreenQ, start_worker, r: redis.Redis) -> None:
    from tests.apps import basic

    queues = [f"m{i}" for i in range(100)]
    worker = start_worker("-P", "gevent", "-c", "20", "-Q", ",".join(queues))
    results = [basic.add.apply_async((i, 1), queue=queues[(i * 37) % 100]) for i in range(300)]
    assert [result.get(timeout=60) for result in results] == [i + 1 for i in range(300)]
    assert sum(r.xlen(Keys.stream(q)) for q in queues) == 0
    assert worker.proc.poll() is None


def test_an_idle_wait_looks_at_the_bands_it_leaves_out_in_its_own_round_trip(
    redis_url: str, r: redis.Redis
) -> None:
    """Once its waits time out, an idle worker's wait carries the look at the unused bands
    (after the blocking read, same round trip): one round trip per wait, as on one queue, and
    a first message at a new priority is found as that wait ends."""
    app = GreenQ("many", broker=redis_url)
    channel = app.broker.channel(1.0)
    for queue in QUEUES:
        app.send_task("t.x", [queue], queue=queue)
    channel.reserve(QUEUES, "c1", 200, 0)
    for _ in range(2):  # the first timed-out wait looks separately; the next carries its look
        assert channel.reserve(QUEUES, "c1", 200, 20, drained=True) == ([], True)
    xreads, groups = _calls(r, "xread"), _calls(r, "xreadgroup")
    # Round trips counted where they are made, on the channel's own connection (the server's
    # total_reads_processed also counted any other client of this Redis).
    sends: list[int] = []
    send = channel.link.send

    def counted(packed: list[bytes], count: int) -> list[object]:
        sends.append(count)
        return send(packed, count)

    channel.link.send = counted  # type: ignore[method-assign]
    assert channel.reserve(QUEUES, "c1", 200, 20, drained=True) == ([], True)
    channel.link.send = send  # type: ignore[method-assign]
    # One round trip, two replies: the wait (XREADGROUP on the 20 default bands) and the XREAD look.
    assert sends == [2]
    assert (_calls(r, "xread") - xreads, _calls(r, "xreadgroup") - groups) == (1, 1)
    thread = _when_blocked(r, lambda: app.send_task("t.x", ["p7"], queue="q4", priority=7))
    got, _ = channel.reserve(QUEUES, "c1", 200, 300, drained=True)
    thread.join()
    assert [(d.queue, d.priority) for d in got] == [("q4", 7)]


def test_the_probes_answer_for_every_queue_in_one_reply(any_redis_url: str) -> None:
    """due.lua, consumers.lua and flows.lua on both Redis versions: only what matters comes back."""
    r = redis.Redis.from_url(any_redis_url)
    app = GreenQ("probes", broker=any_redis_url)
    link = app.broker.upkeep().link
    probes = Probes(link)
    delayed = [Keys.delayed(f"d{i}") for i in range(120)]  # three chunks of 50
    assert probes.due(delayed) == ([], None)
    now_ms = int(r.time()[0]) * 1000
    r.zadd(delayed[3], {"a": now_ms - 5000, "b": now_ms + 60_000})
    r.zadd(delayed[77], {"c": now_ms + 30_000})
    r.zadd(delayed[119], {"d": now_ms - 1})
    due, soonest = probes.due(delayed)
    assert due == [3, 119] and soonest is not None and 25 < soonest <= 30

    queues = [f"c{i}" for i in range(8)]
    streams = band_major([k for q in queues for k in Keys.bands(q)], 10)
    assert streams[:8] == [Keys.bands(q)[0] for q in queues]  # every queue's priority 9 first
    assert probes.other_consumers(streams, GROUP, "me") == []
    r.xadd(Keys.stream("c5"), {"m": "x"})  # a band with no group yet
    r.xadd(Keys.stream("c6", 3), {"m": "x"})
    r.xgroup_create(Keys.stream("c6", 3), GROUP, "0")
    r.xreadgroup(GROUP, "other", {Keys.stream("c6", 3): ">"})
    r.xreadgroup(GROUP, "me", {Keys.stream("c6", 3): ">"})
    assert probes.other_consumers(streams, GROUP, "me") == [(streams.index(Keys.stream("c6", 3)), "other")]

    channel = app.broker.channel()
    assert channel.flow_upkeep(queues, [], {}, 1000) == ([{}] * 8, [])
    r.hset(Keys.flow("c2"), mapping={"paused": "1", "rate": "5/s"})
    flows, _ = channel.flow_upkeep(queues, [], {}, 1000)
    assert flows[2] == {"paused": "1", "rate": "5/s"} and flows[:2] + flows[3:] == [{}] * 7


def _idle_period(r: redis.Redis, periods: int) -> dict[str, float]:
    """Redis work of the only worker talking to ``r`` per heartbeat period (its heartbeats are
    the clock: one ``SET`` each), over ``periods`` of them: commands by name (scripts' own
    included), ``reads`` (about one per round trip). This poll's own INFO calls are left out."""
    polls, start = 0, r.info("all")
    while True:
        time.sleep(0.05)
        now = r.info("all")
        polls += 1
        beats = now.get("cmdstat_set", {}).get("calls", 0) - start.get("cmdstat_set", {}).get("calls", 0)
        if beats >= periods:
            break
    counts = {
        key.removeprefix("cmdstat_"): (row["calls"] - start.get(key, {}).get("calls", 0)) / beats
        for key, row in now.items()
        if key.startswith("cmdstat_") and key != "cmdstat_info"
    }
    counts["reads"] = (now["total_reads_processed"] - start["total_reads_processed"] - polls) / beats
    return counts


def test_an_idle_worker_costs_the_same_round_trips_for_thirty_queues_as_for_one(
    app: GreenQ, start_worker, r: redis.Redis
) -> None:
    """What an idle worker sends per heartbeat period, on 1 queue and on 30 (300 band streams):
    the same round trips (probes answer for every queue in one reply), the same scripts, and
    besides XINFO CONSUMERS on each band that exists (recovery needs each one's consumers)
    about the same commands: no command per queue per tick (issue 23 item 5)."""
    from tests.apps import basic

    idle: dict[int, dict[str, float]] = {}
    for count in (1, 30):
        queues = [f"idle{count}x{i}" for i in range(count)]
        env = {"GREENQ_WORKER_LOST_TIMEOUT": "2"}  # a heartbeat every 0.5 s
        worker = start_worker("-P", "gevent", "-c", "4", "-Q", ",".join(queues), env=env)
        results = [basic.add.apply_async((i, 1), queue=q) for i, q in enumerate(queues)]
        assert [result.get(timeout=30) for result in results] == [i + 1 for i in range(count)]
        _idle_period(r, 2)  # settle: results written, first recovery pass done
        idle[count] = _idle_period(r, 8)
        worker.stop()
    one, many = idle[1], idle[30]

    def near(a: float, b: float, slack: float) -> bool:
        return abs(a - b) <= 0.2 * max(a, b) + slack

    assert near(many["reads"], one["reads"], 1.5), (one, many)
    # One consumers.lua call per CONSUMERS_CHUNK bands, in the recovery pass's one round trip.
    chunks = -(-30 * 10 // CONSUMERS_CHUNK) - 1
    assert near(many.get("eval", 0), one.get("eval", 0) + chunks, 1.0), (one, many)
    # Told of changes (CLIENT TRACKING), delayed sets and queue controls are read on a change,
    # when due, and once a second: per 0.5 s period, recovery's script and half of due.lua's and
    # flows.lua's (polling every 100 ms, it was seven).
    assert one.get("eval", 0) <= 3, one
    assert many.get("xinfo", 0) <= 1.5 * 30 * 2, (one, many)  # recovery: each existing band, every 0.5 s
    rest = {k: sum(v for c, v in counts.items() if c not in ("xinfo", "reads")) for k, counts in idle.items()}
    assert rest[30] <= 1.2 * rest[1] + 12, (one, many)  # e.g. one EXISTS per 50 keys in a probe
