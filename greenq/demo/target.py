"""A local HTTP target for demos, tests and load tests: ``/delay/<ms>`` and ``/bytes/<n>``.

On 127.0.0.1 only, with keep-alive. Run it as ``python -m greenq.demo.target --port 8099``; it
prints ``listening on PORT`` when ready. By default a lean gevent ``StreamServer`` answers: gevent's
WSGI server cost so much CPU per request that it bounded the benchmarks it was meant to serve
(docs/http-tasks.md has the figures); ``--wsgi`` serves the same ``app`` through
``gevent.pywsgi``. The lean server reads requests, never parses anything beyond the request
line and ``Content-Length``: it is a load-test fixture, not an HTTP implementation.
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
from gevent.server import StreamServer  # noqa: E402

_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found"}


def answer(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for one path; both servers below answer with it.

    ``/delay/<ms>`` answers ``ok`` after ms; ``/bytes/<n>`` answers n bytes; ``/status/<code>``
    answers that status; ``/redirect/<n>`` redirects n times, then to ``/delay/0``; else 404.
    """
    parts = path.split("?", 1)[0].strip("/").split("/")
    json, text = [("Content-Type", "application/json")], [("Content-Type", "text/plain")]
    try:
        if parts[0] == "redirect" and len(parts) == 2:
            hops = int(parts[1])
            return 302, [("Location", f"/redirect/{hops - 1}" if hops > 1 else "/delay/0")], b""
        if parts[0] == "delay" and len(parts) == 2:
            gevent.sleep(int(parts[1]) / 1000)
            return 200, json, b'{"ok": true}'
        if parts[0] == "bytes" and len(parts) == 2:
            return 200, json, b"x" * min(int(parts[1]), 50_000_000)
        if parts[0] == "status" and len(parts) == 2:
            return int(parts[1]), text, b"status"
    except ValueError:
        return 400, text, b""
    return 404, text, b""


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI app (``--wsgi``, and ``loadtests/target.py``): see ``answer``."""
    status, headers, body = answer(environ.get("PATH_INFO", "/"))
    reason = _REASONS.get(status, "STATUS")
    start_response(f"{status} {reason}", [*headers, ("Content-Length", str(len(body)))])
    return [body]


def handle(sock: socket.socket, _address: Any) -> None:
    """Serve one keep-alive connection until the client closes it."""
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, path, _version = lines[0].decode("latin-1").split(" ", 2)
            length = next(
                (int(h.split(b":", 1)[1]) for h in lines[1:] if h.lower().startswith(b"content-length:")), 0
            )
            while len(buffer) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            buffer = buffer[length:]
            status, headers, body = answer(path)
            header_lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
            sock.sendall(
                b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\n\r\n%s"
                % (
                    status,
                    _REASONS.get(status, "STATUS").encode(),
                    header_lines.encode("latin-1"),
                    len(body),
                    body if method != "HEAD" else b"",
                )
            )
    except (OSError, ValueError):
        return
    finally:
        sock.close()


def serve(port: int = 0, backlog: int = 2048, wsgi: bool = False) -> WSGIServer | StreamServer:
    """Start serving in this (patched) process; returns the started server."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY: without it pywsgi's separate header and body writes
    # wait on the client's delayed ACK, adding ~40 ms to every keep-alive request.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(backlog)
    server = WSGIServer(listener, app, log=None) if wsgi else StreamServer(listener, handle)
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--wsgi", action="store_true", help="serve through gevent.pywsgi instead")
    args = parser.parse_args()
    server = serve(args.port, wsgi=args.wsgi)
    print(f"listening on {server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
