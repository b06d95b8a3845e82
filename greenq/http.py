"""greenq.http: one shared, pool-sized HTTP client per process for tasks.

Built on geventhttpclient in a monkey-patched worker and on urllib3's ``PoolManager`` elsewhere
(prefork children and scripts): both cost a fraction of a ``requests.Session``'s CPU per request
(docs/http-tasks.md has the figures). One client per process, created
after the fork. The worker sizes it to its concurrency before the first task runs; a task waits
for a free connection instead of opening more than that.

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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

import orjson

from greenq.exceptions import GreenqError

if TYPE_CHECKING:
    from greenq.http_transports import HeaderSource

DEFAULT_POOL_SIZE = 100
DEFAULT_TIMEOUT_S = 30.0
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})


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
    """A fully read response. ``headers`` is built on first use: most tasks never look."""

    def __init__(self, status: int, headers: HeaderSource, content: bytes, url: str) -> None:
        self.status_code = status
        self._raw_headers = headers
        self._headers: Headers | None = None
        self.content = content
        self.url = url

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._raw_headers)
        return self._headers

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


class Headers(dict):  # type: ignore[type-arg]
    """Response headers; names are matched case-insensitively (stored lower-case)."""

    def __init__(self, items: HeaderSource) -> None:
        super().__init__((k.lower(), v) for k, v in items.items())

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name.lower() if isinstance(name, str) else name)

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class Client:
    """An HTTP client over one connection pool (see ``greenq.http_transports``); thread- and
    greenlet-safe. Follows up to ``MAX_REDIRECTS`` redirects, as requests does."""

    def __init__(self, pool_size: int = DEFAULT_POOL_SIZE, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        from greenq.http_transports import make_transport

        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self.transport = make_transport(pool_size)

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
            ConnectionError: refused, reset, the name did not resolve, or too many redirects.
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
        method = method.upper()
        for _ in range(MAX_REDIRECTS + 1):
            try:
                status, got, content = self.transport.send(
                    method, url, body, sent_headers, timeout if timeout is not None else self.timeout_s
                )
            except TimeoutError as exc:
                raise Timeout(f"{method} {url}: {exc or 'timed out'}") from exc
            except builtins.ConnectionError as exc:
                raise ConnectionError(f"{method} {url}: {exc}") from exc
            response = Response(status, got, content, url)
            location = response.headers.get("location") if status in REDIRECTS else None
            if not location:
                return response
            url = urljoin(url, location)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", None  # as browsers and requests do
                sent_headers = {k: v for k, v in sent_headers.items() if k.lower() != "content-type"}
        raise ConnectionError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

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
        self.transport.close()


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
