#!/usr/bin/env python
"""What one new redis-py connection costs, with and without greenq's cached version lookup.

    python scripts/redis_connect_cost.py [--connects 200] [--repeats 3]

In a gevent-patched process (as a worker is), opens ``--connects`` connections one after
another to a redis-server started on a free port (the bundled binary), each with redis-py's
own handshake (``HELLO``, ``CLIENT SETINFO``), and prints the wall and CPU milliseconds per
connect: first with redis-py as installed, then with ``greenq.broker.stack.cache_redis_lib_version``
applied (redis-py 8 otherwise reads its version from its package metadata at every connect).
Interleaved ``--repeats`` times; medians. Every loop is bounded; the server is stopped by PID.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from greenq.pools.gevent import patch

patch()

import redis  # noqa: E402
import redis.utils  # noqa: E402

from greenq.embedded import RedisServer, bundled_binary, free_port  # noqa: E402

UNCACHED = redis.utils.get_lib_version  # as installed: this script imports no greenq broker module


def per_connect_ms(url: str, connects: int) -> tuple[float, float]:
    """Wall and CPU ms per connect over ``connects`` new connections, each closed at the end."""
    pool = redis.ConnectionPool.from_url(url, max_connections=connects + 1)
    opened = []
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(connects):
        connection = pool.make_connection()
        connection.connect()
        opened.append(connection)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for connection in opened:
        connection.disconnect()
    return wall / connects * 1000, cpu / connects * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = RedisServer(binary=bundled_binary(), port=free_port()).start()
    runs: dict[str, list[tuple[float, float]]] = {"as installed": [], "version cached": []}
    try:
        import greenq.broker.stack  # noqa: F401 - importing it caches the lookup, as in a worker

        lookups = {"as installed": UNCACHED, "version cached": redis.utils.get_lib_version}
        assert not hasattr(UNCACHED, "cache_info") and hasattr(lookups["version cached"], "cache_info")
        for repeat in range(args.repeats):
            for name in runs:
                redis.utils.get_lib_version = lookups[name]
                wall, cpu = per_connect_ms(server.url, args.connects)
                runs[name].append((wall, cpu))
                print(f"{repeat + 1}/{args.repeats} {name:>14}: {wall:.3f} ms wall, {cpu:.3f} ms CPU each")
    finally:
        server.stop()
    print(f"\nmedians, {args.connects} connects a run, redis-py {redis.__version__}:")
    for name, done in runs.items():
        wall = statistics.median(w for w, _ in done)
        cpu = statistics.median(c for _, c in done)
        print(f"{name:>14}: {wall:.3f} ms wall, {cpu:.3f} ms CPU per connect")
    return 0


if __name__ == "__main__":
    sys.exit(main())
