"""Measure the dashboard at scale: how long the overview takes to render with 100 queues, 50
workers and 1,000,000 waiting messages, how many Redis commands one render costs, and how much
Redis CPU the dashboard adds while browsers keep the overview open (INFO CPU before and after a
fixed period). Figures go in docs/dashboard.md. Not a test (no timed assertions in tests):

    nice -n 10 python -m tests.dashboard.measure [--queues 100] [--messages 1000000] [--seconds 30]

Everything runs against a redis-server of its own (the bundled 6.2) on a free port; the heartbeat
records of the 50 workers are written as workers write them (no worker processes: they would
drain the queues); the browsers are headless Chromium pages on the overview.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from typing import Any

import orjson
import redis

from greenq.broker.keys import GROUP, Keys
from greenq.broker.redis import RedisBroker
from greenq.dashboard import queries
from greenq.embedded import RedisServer, bundled_binary
from greenq.message import Message, encode
from tests.dashboard.conftest import CHROMIUM, DashboardProcess


def fill(r: redis.Redis, queues: int, messages: int, workers: int) -> None:
    """``messages`` waiting over ``queues`` queues (20 of each delivered, not acked), a few dead
    and delayed ones, and ``workers`` live heartbeats."""
    per_queue = messages // queues
    for index in range(queues):
        name = f"q{index:03d}"
        body = encode(Message(id="0" * 32, task="shop.tasks.sync", args=[index, "account"], queue=name))
        r.sadd(Keys.QUEUES, name)
        for first in range(0, per_queue, 20_000):
            pipe = r.pipeline(transaction=False)
            for _ in range(first, min(per_queue, first + 20_000)):
                pipe.xadd(Keys.stream(name), {"m": body})
            pipe.execute()
        r.xgroup_create(Keys.stream(name), GROUP, id="0")
        r.xreadgroup(GROUP, f"w{index % workers}", {Keys.stream(name): ">"}, count=20)
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.zadd(Keys.delayed(name), {b"0|" + body + str(i).encode(): time.time() * 1000 + i * 60_000})
            if index % 10 == 0:
                pipe.xadd(Keys.dead(name), {"m": body, "reason": "failed: ValueError", "time": 0})
        pipe.execute()
    clock = time.time()
    for index in range(workers):
        consumer = f"w{index}@bench:{1000 + index}:abc"
        record = {
            "consumer": consumer,
            "name": f"w{index}@bench",
            "host": "bench",
            "pid": 1000 + index,
            "queues": [f"q{(2 * index) % queues:03d}", f"q{(2 * index + 1) % queues:03d}"],
            "pool": "gevent",
            "concurrency": 100,
            "reserved": 20,
            "running": 10,
            "processed": 123_456,
            "failed": 12,
            "started_at": clock - 3600,
            "heartbeat_at": clock,
            "active": [
                {"id": f"{index}-{i}", "task": "shop.tasks.sync", "started": clock} for i in range(10)
            ],
            "send_task_events": True,
        }
        r.set(Keys.worker(consumer), orjson.dumps(record), ex=3600)
        r.sadd(Keys.WORKERS, consumer)


def cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def timed_gets(url: str, rounds: int) -> list[float]:
    took = []
    for _ in range(rounds):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        took.append((time.perf_counter() - start) * 1000)
    return took


def redis_cpu_while(r: redis.Redis, seconds: float, base: str, pages: int, browser: Any) -> float:
    """Redis CPU (ms per second) over ``seconds`` with ``pages`` browser pages on the overview."""
    context = browser.new_context() if pages else None
    try:
        for _ in range(pages):
            page = context.new_page()
            page.goto(base + "/")
        time.sleep(3.0 if pages else 0.0)  # pages connected and their first ticks past
        before = cpu_s(r)
        time.sleep(seconds)
        return (cpu_s(r) - before) * 1000 / seconds
    finally:
        if context is not None:
            context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    server = RedisServer(bundled_binary()).start()
    dashboard = None
    try:
        r = redis.Redis.from_url(server.url)
        start = time.monotonic()
        fill(r, args.queues, args.messages, args.workers)
        print(
            f"filled in {time.monotonic() - start:.1f} s; used_memory {r.info('memory')['used_memory_human']}"
        )
        broker = RedisBroker(server.url)
        queries.overview(broker)
        in_process = []
        r.config_resetstat()
        for _ in range(args.rounds):
            begin = time.perf_counter()
            seen = queries.overview(broker)
            in_process.append((time.perf_counter() - begin) * 1000)
        stats = r.info("commandstats")
        per_render = {
            k.removeprefix("cmdstat_"): v["calls"] // args.rounds
            for k, v in stats.items()
            if k != "cmdstat_config"
        }
        waiting = sum(q.waiting for q in seen.queues)
        dashboard = DashboardProcess(server.url, "--port", "0")
        timed_gets(dashboard.base + "/", 3)  # warm: imports, first connections
        http = timed_gets(dashboard.base + "/", args.rounds)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            idle = redis_cpu_while(r, args.seconds, dashboard.base, 0, browser)
            one = redis_cpu_while(r, args.seconds, dashboard.base, 1, browser)
            five = redis_cpu_while(r, args.seconds, dashboard.base, 5, browser)
            browser.close()
        report = {
            "queues": len(seen.queues),
            "workers": len(seen.workers),
            "waiting": waiting,
            "overview_in_process_ms": {"median": statistics.median(in_process), "max": max(in_process)},
            "overview_http_ms": {"median": statistics.median(http), "max": max(http)},
            "redis_commands_per_overview": per_render,
            "redis_cpu_ms_per_s": {"no browser": idle, "1 browser": one, "5 browsers": five},
        }
        print(json.dumps(report, indent=2))
    finally:
        if dashboard is not None:
            dashboard.stop()
        server.stop()


if __name__ == "__main__":
    main()
