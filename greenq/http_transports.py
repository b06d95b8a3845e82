"""The two connection pools behind ``greenq.http``: geventhttpclient under gevent, urllib3 elsewhere.

geventhttpclient costs less than half of urllib3's CPU per request, and only with it does a
gevent worker keep pace with a 100 ms endpoint at hundreds of requests in flight
(docs/http-tasks.md has the figures). It needs gevent's sockets, so a process that is not
monkey-patched (a prefork child, a script) uses urllib3. Both send requests as given: redirects
are followed by ``greenq.http.Client``, the same way for both. Each transport returns
``(status, headers, body)`` or raises the built-in ``TimeoutError``/``ConnectionError``, which
``greenq.http`` turns into its own errors.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit


class HeaderSource(Protocol):
    """Response headers as a transport returns them: anything with ``items()``."""

    def items(self) -> Iterable[tuple[str, str]]: ...


Reply = tuple[int, HeaderSource, bytes]
ROUTES_KEPT = 4096  # URLs whose parsed form GeventTransport keeps
USUAL_TIMEOUT_S = 30.0  # greenq.http's default: a pool of its own, no per-request timer


class Transport(Protocol):
    name: str

    def send(
        self, method: str, url: str, body: bytes | str | None, headers: dict[str, str], timeout_s: float
    ) -> Reply: ...

    def close(self) -> None: ...


class Urllib3Transport:
    """One urllib3 ``PoolManager``; ``block=True``: at most ``pool_size`` connections per host."""

    name = "urllib3"

    def __init__(self, pool_size: int) -> None:
        import urllib3
        import urllib3.exceptions

        self._errors = urllib3.exceptions
        self._pool = urllib3.PoolManager(num_pools=32, maxsize=pool_size, block=True, retries=False)

    def send(
        self, method: str, url: str, body: bytes | str | None, headers: dict[str, str], timeout_s: float
    ) -> Reply:
        errors = self._errors
        try:
            raw = self._pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=timeout_s,
                redirect=False,
                preload_content=True,
            )
        except errors.NewConnectionError as exc:  # NOTE: a subclass of ConnectTimeoutError
            if isinstance(exc, errors.ConnectTimeoutError) and "timed out" in str(exc):
                raise TimeoutError("connect timed out") from exc
            raise ConnectionError(str(exc)) from exc
        except errors.TimeoutError as exc:
            raise TimeoutError("timed out") from exc
        except (errors.ProtocolError, errors.MaxRetryError, errors.NameResolutionError) as exc:
            raise ConnectionError(str(exc)) from exc
        return raw.status, raw.headers, raw.data

    def close(self) -> None:
        self._pool.clear()


class GeventTransport:
    """geventhttpclient: one ``HTTPClient`` (a pool of ``pool_size`` keep-alive sockets) per
    scheme, host, port and timeout — a timeout is a property of its client there.

    NOTE: timeouts other than the usual 30 s (explicit ones, and a task's remaining time, which
    differs on every call) share the client of the next power of two and are cut to the exact
    time by a ``gevent.Timeout``, so that deadlines cannot make a pool per call. A response cut
    short is not complete, so its socket is closed, never reused.
    """

    name = "geventhttpclient"

    def __init__(self, pool_size: int) -> None:
        import gevent  # noqa: TID251 - only in a monkey-patched process (make_transport)
        from geventhttpclient import HTTPClient
        from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

        self._timer = gevent.Timeout
        self.pool_size = pool_size
        self._make = HTTPClient
        self._protocol_errors = (HTTPParseError, HTTPConnectionClosed)
        self._clients: dict[tuple[str, str, int | None, float], Any] = {}
        # (url, timeout) -> (client, path and query): most tasks call a few URLs over and over
        self._routes: dict[tuple[str, float], tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def _client(self, scheme: str, host: str, port: int | None, timeout_s: float) -> Any:
        key = (scheme, host, port, timeout_s)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._make(
                        host,
                        port,
                        concurrency=self.pool_size,
                        connection_timeout=timeout_s,
                        network_timeout=timeout_s,
                        ssl=scheme == "https",
                    )
                    pool = getattr(client, "_connection_pool", None)
                    if scheme == "http" and pool is not None and hasattr(pool, "_is_socket_alive"):
                        pool._is_socket_alive = idle_socket_usable  # see idle_socket_usable
                    self._clients[key] = client
        return client

    def _route(self, url: str, timeout_s: float) -> tuple[Any, str]:
        """The client for ``url``'s origin and the request target (path and query)."""
        route = self._routes.get((url, timeout_s))
        if route is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            client = self._client(parts.scheme, parts.hostname, parts.port, timeout_s)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            if len(self._routes) >= ROUTES_KEPT:
                self._routes.clear()  # URLs with ever-changing query strings: keep it bounded
            route = self._routes[url, timeout_s] = (client, target)
        return route

    def send(
        self, method: str, url: str, body: bytes | str | None, headers: dict[str, str], timeout_s: float
    ) -> Reply:
        cut = None
        if timeout_s != USUAL_TIMEOUT_S:
            cut, timeout_s = timeout_s, 2.0 ** math.ceil(math.log2(max(timeout_s, 0.125)))
        client, target = self._route(url, timeout_s)
        timer = self._timer(cut, TimeoutError("timed out")) if cut is not None and cut < timeout_s else None
        try:
            if timer is not None:
                timer.start()
            response = client.request(method, target, body=body, headers=headers)
            try:
                content = response.read()
            finally:
                response.release()
        except TimeoutError:
            raise
        except self._protocol_errors as exc:
            raise ConnectionError(f"bad or closed response: {exc}") from exc
        except OSError as exc:  # refused, reset, DNS (socket.gaierror)
            raise ConnectionError(str(exc) or type(exc).__name__) from exc
        finally:
            if timer is not None:
                timer.close()
        return response.status_code, response, content  # its items(): the header lines, read on use

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._routes = {}
        for client in clients:
            client.close()


def idle_socket_usable(sock: Any) -> bool:
    """Is a pooled keep-alive socket still good for a request? One non-blocking ``MSG_PEEK`` on
    the OS socket: nothing to read means open and idle; end of stream or stray bytes mean the
    server closed or dirtied it, and the pool opens a new one.

    NOTE: replaces geventhttpclient's own check (``ConnectionPool._is_socket_alive``), which
    asks the same question with ``gevent.select.select(..., 0)``: one ``select`` system call
    behind gevent's Python wrapper (it does not go through the hub when the timeout is 0). The
    9 % of worker CPU once blamed on it was not confirmed later: A/B runs of the 10,000-GET
    benchmark (2026-11-25) could not tell the two apart within this machine's noise (±12 %).
    A server closing the socket between this check and the request is still caught by
    geventhttpclient's retry of closed connections (idempotent methods only).
    Plain HTTP only: under TLS, records the client has not read yet (session tickets) would look
    like stray bytes, so HTTPS pools keep geventhttpclient's check.
    """
    raw = getattr(sock, "_sock", sock)  # under a gevent socket, the OS socket: peeking never waits
    try:
        if raw is None or raw.fileno() < 0:
            return False
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except (OSError, ValueError):
        return False
    return False


def make_transport(pool_size: int) -> Transport:
    """geventhttpclient in a monkey-patched process, urllib3 otherwise."""
    import sys

    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        try:
            return GeventTransport(pool_size)
        except ImportError:  # pragma: no cover - geventhttpclient is a dependency
            pass
    return Urllib3Transport(pool_size)
