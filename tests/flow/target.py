"""An HTTP target for the flow-control tests and the crawl benchmark, on loopback addresses only.

``python tests/flow/target.py --hosts N [--limit-concurrency C --limit-rate R]`` listens on
127.0.0.1 ... 127.0.0.N (one port, the same on each address: each address is a "host") and
prints ``listening on PORT``. It counts, per host, the requests in progress (and the most at
once), the requests answered, and those it refused for going over its own per-host limits
(``--limit-*``: 429, as a real API would). Paths:

* ``/hold/<ms>``: answer ``ok`` after ms.
* ``/backoff/<s>``: the first request opens an s-second window answered 429 with
  ``Retry-After: s``; requests during the window are counted (``in_window``) and refused the same
  way; after it, 200.
* ``/fail``: 503 without Retry-After (a failing host), counted (``failed``).
* ``/stats``: JSON per host: active, most, answered, refused, in_window, after_window.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402


class Target:
    def __init__(self, limit_concurrency: int, limit_rate: float) -> None:
        self.limit_concurrency = limit_concurrency
        self.limit_rate = limit_rate
        self.hosts: dict[str, dict[str, Any]] = collections.defaultdict(
            lambda: {"active": 0, "most": 0, "answered": 0, "refused": 0, "in_window": 0, "after_window": 0}
        )
        self.recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.windows: dict[str, float] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        host = environ.get("SERVER_NAME_LOCAL") or environ["HTTP_HOST"].split(":")[0]
        parts = environ["PATH_INFO"].strip("/").split("/")
        stats = self.hosts[host]
        if parts[0] == "stats":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.hosts).encode()]
        now = time.monotonic()
        if parts[0] == "backoff":
            return self._backoff(host, stats, float(parts[1]), now, start_response)
        if parts[0] == "fail":
            stats["failed"] = stats.get("failed", 0) + 1
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        over = self._over(host, stats, now)
        if over:
            stats["refused"] += 1
            stats[over] = stats.get(over, 0) + 1
            start_response("429 Too Many Requests", [("Content-Type", "text/plain")])
            return [b"over the limit"]
        stats["active"] += 1
        stats["most"] = max(stats["most"], stats["active"])
        try:
            gevent.sleep(int(parts[1]) / 1000 if len(parts) > 1 else 0)
        finally:
            stats["active"] -= 1
        stats["answered"] += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def _over(self, host: str, stats: dict[str, Any], now: float) -> str:
        """Why this request goes over the host's limits (``refused_busy``, ``refused_rate``), or ""."""
        if self.limit_concurrency and stats["active"] >= self.limit_concurrency:
            return "refused_busy"
        if self.limit_rate:
            recent = self.recent[host]
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= self.limit_rate:
                return "refused_rate"
            recent.append(now)
        return ""

    def _backoff(
        self, host: str, stats: dict[str, Any], seconds: float, now: float, start: Any
    ) -> list[bytes]:
        until = self.windows.get(host)
        if until is None:
            self.windows[host] = until = now + seconds
        elif now < until:
            stats["in_window"] += 1
        else:
            stats["after_window"] += 1
            start("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        start("429 Too Many Requests", [("Retry-After", str(max(1, round(until - now))))])
        return [b"slow down"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--limit-concurrency", type=int, default=0)
    parser.add_argument("--limit-rate", type=float, default=0.0)
    args = parser.parse_args()
    app = Target(args.limit_concurrency, args.limit_rate)
    probe = socket.socket()
    probe.bind(("127.0.0.1", args.port))
    port = probe.getsockname()[1]
    probe.close()
    servers = []
    for n in range(1, args.hosts + 1):
        address = f"127.0.0.{n}"

        def handler(environ: dict[str, Any], start: Any, address: str = address) -> list[bytes]:
            environ["SERVER_NAME_LOCAL"] = address
            return app(environ, start)

        server = WSGIServer((address, port), handler, log=None, error_log=None)
        server.start()
        servers.append(server)
    print(f"listening on {port}", flush=True)
    try:
        gevent.wait()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
