"""greenq.http: one shared, pool-sized HTTP client per process for tasks.

Built on urllib3's ``PoolManager`` (measured here at ~0.24 ms of CPU per GET against ~0.62 ms
for a ``requests.Session``; docs/http-tasks.md has the figures and why not geventhttpclient).
It works the same in a patched gevent worker (sockets are cooperative) and in prefork children
(one client per child, created after the fork). The worker sizes it to its concurrency before
the first task runs; ``block=True`` makes a task wait for a free connection instead of opening
more than that.

The API is the part of requests that tasks use: ``get/post/put/patch/delete/request`` with
``params``, ``json``, ``data``, ``headers``, ``timeout``; responses with ``status_code``,
``json()``, ``text``, ``content``, ``headers``, ``raise_for_status()``. Errors are
``HTTPError``, ``Timeout`` and ``ConnectionError`` — subclasses of the built-in
``OSError``/``TimeoutError``/``ConnectionError`` too, so ``autoretry_for=(OSError,)`` works.
"""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from greenq.exceptions import GreenqError

DEFAULT_POOL_SIZE = 100
DEFAULT_TIMEOUT_S = 30.0


class HTTPError(GreenqError, OSError):
    """A response with status >= 400, raised by ``raise_for_status()``."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class ConnectionError(GreenqError, builtins.ConnectionError):
    """The server could not be reached (refused, reset, DNS)."""


class Timeout(GreenqError, TimeoutError):
    """No answer within the timeout."""


class Response:
    """A fully read response."""

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, url: str) -> None:
        self.status_code = status
        self.headers = dict(headers)
        self.content = content
        self.url = url

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers) or "utf-8", errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(f"HTTP {self.status_code} for {self.url}", self)


def _charset(headers: Mapping[str, str]) -> str | None:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None


class Client:
    """An HTTP client over one urllib3 PoolManager; thread- and greenlet-safe."""

    def __init__(self, pool_size: int = DEFAULT_POOL_SIZE, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        import urllib3  # here, not at the top: a worker imports this module only to size the pool
        import urllib3.exceptions

        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self._errors = urllib3.exceptions
        self._pool = urllib3.PoolManager(num_pools=32, maxsize=pool_size, block=True, retries=False)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read the whole response.

        Raises:
            Timeout: no connection or no answer within ``timeout`` seconds (default 30).
            ConnectionError: refused, reset, or the name did not resolve.
        """
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        sent_headers = dict(headers or {})
        body: bytes | str | None = None
        if json is not None:
            body = orjson.dumps(json)
            sent_headers.setdefault("Content-Type", "application/json")
        elif isinstance(data, Mapping):
            body = urlencode(data, doseq=True)
            sent_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = data
        errors = self._errors
        try:
            raw = self._pool.request(
                method.upper(),
                url,
                body=body,
                headers=sent_headers,
                timeout=timeout if timeout is not None else self.timeout_s,
                redirect=True,
                preload_content=True,
            )
        except errors.NewConnectionError as exc:  # NOTE: a subclass of ConnectTimeoutError
            if isinstance(exc, errors.ConnectTimeoutError) and "timed out" in str(exc):
                raise Timeout(f"{method.upper()} {url}: connect timed out") from exc
            raise ConnectionError(f"{method.upper()} {url}: {exc}") from exc
        except errors.TimeoutError as exc:
            raise Timeout(f"{method.upper()} {url}: timed out") from exc
        except (
            errors.ProtocolError,
            errors.MaxRetryError,
            errors.NameResolutionError,
        ) as exc:
            raise ConnectionError(f"{method.upper()} {url}: {exc}") from exc
        return Response(raw.status, raw.headers, raw.data, url)

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self._pool.clear()


class _ProcessClient:
    """Holds the one client of this process; rebuilt after a fork (prefork children)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: Client | None = None
        self.pid = 0
        self.pool_size = DEFAULT_POOL_SIZE

    def get(self) -> Client:
        client = self.client
        if client is not None and self.pid == os.getpid():
            return client
        with self.lock:
            if self.client is None or self.pid != os.getpid():
                self.client = Client(self.pool_size)
                self.pid = os.getpid()
            return self.client


# NOTE: a process-wide client is the point of this module (one pool of keep-alive connections
# shared by every task), so this is the one deliberate module-level object in greenq.
_PROCESS = _ProcessClient()


def configure(pool_size: int) -> None:
    """Size the process client (the worker calls this with its concurrency before tasks run)."""
    _PROCESS.pool_size = max(1, pool_size)
    if _PROCESS.client is not None and _PROCESS.client.pool_size != _PROCESS.pool_size:
        _PROCESS.client.close()
        _PROCESS.client = None


def client() -> Client:
    """This process's shared client."""
    return _PROCESS.get()


def request(method: str, url: str, **kwargs: Any) -> Response:
    return client().request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> Response:
    return client().request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> Response:
    return client().request("POST", url, **kwargs)


def put(url: str, **kwargs: Any) -> Response:
    return client().request("PUT", url, **kwargs)


def patch(url: str, **kwargs: Any) -> Response:
    return client().request("PATCH", url, **kwargs)


def delete(url: str, **kwargs: Any) -> Response:
    return client().request("DELETE", url, **kwargs)


def requests_session(pool_size: int | None = None) -> Any:
    """A ``requests.Session`` whose adapter keeps ``pool_size`` connections per host (default:
    the worker's concurrency), for code that needs requests itself."""
    import requests
    from requests.adapters import HTTPAdapter

    size = pool_size or _PROCESS.pool_size
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=32, pool_maxsize=size, pool_block=True)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
