"""CPU per Redis command from many greenlets of one gevent process, by client (issue 9).

    python scripts/redis_clients.py [--commands 60000] [--greenlets 500] [--repeats 3]

Starts its own redis-server (greenq.embedded) on 127.0.0.1 and runs INCR from ``--greenlets``
greenlets through: redis-py's default pool (a connection per greenlet), app.redis's pool of 50
without multiplexing, and app.redis as a gevent worker has it (multiplexed, greenq.redis_mux).
Prints commands/s and process CPU per command, median of the repeats, and checks the counter.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import functools  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from greenq.embedded import RedisServer  # noqa: E402
from greenq.task_redis import task_client  # noqa: E402


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(incr: Callable[[], Any], commands: int, greenlets: int) -> tuple[float, float]:
    """(commands per second, CPU µs per command) for ``commands`` calls from ``greenlets``."""
    calls = iter(range(commands))

    def loop() -> None:
        for _ in calls:
            incr()

    cpu, started = cpu_s(), time.perf_counter()
    gevent.joinall([gevent.spawn(loop) for _ in range(greenlets)], raise_error=True)
    elapsed = time.perf_counter() - started
    return commands / elapsed, (cpu_s() - cpu) / commands * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=60_000)
    parser.add_argument("--greenlets", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        default = redis.Redis.from_url(server.url, max_connections=args.greenlets + 100)
        pooled = task_client(server.url, 50, 10.0, 5.0)
        pooled._mux = None  # what app.redis was before it multiplexed
        multiplexed = task_client(server.url, 50, 10.0, 5.0)
        clients = {
            "redis-py default pool (a connection per greenlet)": default,
            "app.redis pool of 50, not multiplexed": pooled,
            "app.redis multiplexed (gevent worker)": multiplexed,
        }
        print(f"{args.commands:,} INCR from {args.greenlets} greenlets, median of {args.repeats}:")
        for label, client in clients.items():
            client.delete("counter")
            incr = functools.partial(client.incr, "counter")
            runs = [run(incr, args.commands, args.greenlets) for _ in range(args.repeats)]
            assert int(client.get("counter")) == args.commands * args.repeats, "lost or doubled INCRs"
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"  {label:52s} {rate:>9,.0f}/s  {cpu:6.1f} µs CPU per command", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
