"""CPU cost per GET of HTTP clients under gevent, no queue: the case for greenq.http.

One gevent-patched process, 500 greenlets, N GETs of a local target's /delay/100; reports wall
time and, more robust on a shared machine, CPU milliseconds per request of this process.

    python scripts/http_clients.py [--requests 10000]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import gevent  # noqa: E402


def _clients(pool_size: int) -> dict[str, Callable[[str], int]]:
    import requests
    from requests.adapters import HTTPAdapter

    from greenq import http
    from greenq.http_transports import Urllib3Transport

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=pool_size))
    http.configure(pool_size)
    on_urllib3 = http.Client(pool_size)
    on_urllib3.transport = Urllib3Transport(pool_size)
    return {
        "requests.Session": lambda url: session.get(url, timeout=10).status_code,
        "greenq.http on urllib3 (prefork children, scripts)": lambda url: on_urllib3.get(url).status_code,
        f"greenq.http on {http.client().transport.name} (gevent workers)": (
            lambda url: http.get(url, timeout=10).status_code
        ),
    }


def _loop(get: Callable[[str], int], url: str, calls: Iterator[int], statuses: list[int]) -> None:
    statuses.extend(get(url) for _ in calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # one client, in a child
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        return _measure(args, args.client, args.url)
    target = subprocess.Popen([sys.executable, "-m", "greenq.demo.target"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        url = f"http://127.0.0.1:{int(target.stdout.readline().split()[-1])}/delay/100"
        # NOTE: each client in a fresh process: measured one after another in one process, the
        # later ones paid up to 2.5x more CPU per GET for what the earlier ones left behind.
        for index in range(3):
            own = ["--client", str(index), "--url", url]
            subprocess.run([sys.executable, __file__, *sys.argv[1:], *own], check=True, timeout=300)
        return 0
    finally:
        target.kill()


def _measure(args: argparse.Namespace, index: int, url: str) -> int:
    name, get = list(_clients(args.concurrency).items())[index]
    calls, statuses = iter(range(args.requests)), []
    wall, cpu = time.perf_counter(), time.process_time()
    # long-lived greenlets sharing one iterator, as a worker's are
    runners = [gevent.spawn(_loop, get, url, calls, statuses) for _ in range(args.concurrency)]
    gevent.joinall(runners, raise_error=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert statuses.count(200) == args.requests
    ideal = args.requests / args.concurrency * 0.1
    print(
        f"{name:<52} {args.requests:,} GETs in {wall:.2f} s (ideal {ideal:.1f} s), "
        f"{cpu / args.requests * 1000:.3f} ms CPU per GET",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
