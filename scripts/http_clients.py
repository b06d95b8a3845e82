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
from collections.abc import Callable  # noqa: E402

import gevent.pool  # noqa: E402


def _clients(pool_size: int) -> dict[str, Callable[[str], int]]:
    import requests
    from requests.adapters import HTTPAdapter

    from greenq import http

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=pool_size))
    http.configure(pool_size)
    clients: dict[str, Callable[[str], int]] = {
        "requests.Session": lambda url: session.get(url, timeout=10).status_code,
        "greenq.http (urllib3)": lambda url: http.get(url, timeout=10).status_code,
    }
    try:
        from geventhttpclient import HTTPClient
        from geventhttpclient.url import URL

        cached: dict[str, HTTPClient] = {}

        def ghc(url: str) -> int:
            parsed = URL(url)
            client = cached.get(parsed.netloc)
            if client is None:
                client = cached[parsed.netloc] = HTTPClient.from_url(parsed, concurrency=pool_size)
            response = client.get(parsed.request_uri)
            response.read()
            return response.status_code

        clients["geventhttpclient"] = ghc
    except ImportError:
        pass
    return clients


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    target = subprocess.Popen([sys.executable, "-m", "greenq.demo.target"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        url = f"http://127.0.0.1:{int(target.stdout.readline().split()[-1])}/delay/100"
        ideal = args.requests / args.concurrency * 0.1
        for name, get in _clients(args.concurrency).items():
            pool = gevent.pool.Pool(args.concurrency)
            wall, cpu = time.perf_counter(), time.process_time()
            statuses = list(pool.imap_unordered(get, [url] * args.requests))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert statuses.count(200) == args.requests
            print(
                f"{name:<24} {args.requests:,} GETs in {wall:.2f} s (ideal {ideal:.1f} s), "
                f"{cpu / args.requests * 1000:.3f} ms CPU per GET",
                flush=True,
            )
        return 0
    finally:
        target.kill()


if __name__ == "__main__":
    raise SystemExit(main())
