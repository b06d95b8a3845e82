"""A local HTTP target for demos, tests and load tests: ``/delay/<ms>`` and ``/bytes/<n>``.

gevent's WSGI server with keep-alive, on 127.0.0.1 only. Run it as
``python -m greenq.demo.target --port 8099``; it prints ``listening on PORT`` when ready.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/delay/<ms>`` answers ``ok`` after ms; ``/bytes/<n>`` answers n bytes; else 404."""
    parts = environ.get("PATH_INFO", "/").strip("/").split("/")
    try:
        if parts[0] == "delay" and len(parts) == 2:
            gevent.sleep(int(parts[1]) / 1000)
            body = b'{"ok": true}'
        elif parts[0] == "bytes" and len(parts) == 2:
            body = b"x" * min(int(parts[1]), 50_000_000)
        elif parts[0] == "status" and len(parts) == 2:
            code = int(parts[1])
            start_response(f"{code} STATUS", [("Content-Type", "text/plain"), ("Content-Length", "6")])
            return [b"status"]
        else:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
    except ValueError:
        start_response("400 Bad Request", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def serve(port: int = 0, backlog: int = 2048) -> WSGIServer:
    """Start serving in this (patched) process; returns the started server."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY: without it pywsgi's separate header and body writes
    # wait on the client's delayed ACK, adding ~40 ms to every keep-alive request.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(backlog)
    server = WSGIServer(listener, app, log=None)
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = serve(args.port)
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
