"""greenq.http: one shared, pool-sized HTTP client per process for tasks.

Built on geventhttpclient in a monkey-patched worker and on urllib3's ``PoolManager`` elsewhere
(prefork children and scripts): both cost a fraction of a ``requests.Session``'s CPU per request
(docs/http-tasks.md has the figures). One client per process, created
after the fork. The worker sizes it to its concurrency before the first task runs; a task waits
for a free connection instead of opening more than that.

The API is the part of requests that tasks use: ``get/post/put/patch/delete/request`` with
``params``, ``json``, ``data``, ``headers``, ``timeout``; responses with ``status_code``,
``json()``, ``text``, ``content``, ``headers``, ``raise_for_status()``. Errors are
``HTTPError``, ``Timeout`` and ``ConnectionError`` (``CircuitOpen`` is one) — subclasses of the
built-in ``OSError``/``TimeoutError``/``ConnectionError`` too, so ``autoretry_for=(OSError,)`` works.

Per host, shared by the process's greenlets (docs/flow-control.md): a 429/503 with Retry-After
holds requests to that host until then, then one probe goes; ``circuit_failures`` failures in a
row open its circuit for ``circuit_open_s``. A task's remaining time is the default timeout.
"""

from __future__ import annotations

import builtins
import email.utils
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin

import orjson

from greenq.exceptions import GreenqError, Retry
from greenq.limits import remaining_s

if TYPE_CHECKING:
    from greenq.http_transports import HeaderSource

DEFAULT_POOL_SIZE = 100
DEFAULT_TIMEOUT_S = 30.0
MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
RETRY_AFTER_MAX_S = 3600.0  # a longer Retry-After is held for this long
CIRCUIT_FAILURES, CIRCUIT_OPEN_S = 5, 10.0  # defaults: failures in a row, seconds open


class HTTPError(GreenqError, OSError):
    """A response with status >= 400, raised by ``raise_for_status()``."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class ConnectionError(GreenqError, builtins.ConnectionError):
    """The server could not be reached (refused, reset, DNS)."""


class Timeout(GreenqError, TimeoutError):
    """No answer within the timeout (or the task's deadline came first)."""


class CircuitOpen(ConnectionError):
    """The host failed too many times in a row: not called until its circuit's time is over."""


def retry_after_s(value: str | None, clock: float | None = None) -> float | None:
    """A ``Retry-After`` (seconds, or an HTTP date) as seconds from now; None if absent or unreadable."""
    try:
        seconds = float(value or "")
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value or "").timestamp() - (clock or time.time())
        except (TypeError, ValueError):
            return None
    return min(RETRY_AFTER_MAX_S, max(0.0, seconds))


class _Host:
    """One host's state; touched only under ``Hosts.lock``."""

    __slots__ = ("failures", "open_until", "probe_done", "probing", "until", "wants_probe")

    def __init__(self) -> None:
        self.until = 0.0  # monotonic: no request before this (Retry-After)
        self.open_until = 0.0  # monotonic: the circuit is open until this
        self.failures = 0  # failures in a row
        self.wants_probe = False  # after a window or an open circuit, one request goes first
        self.probing = False
        self.probe_done = threading.Event()


class Hosts:
    """Per-host back-off and circuit breaker of one client, shared by every greenlet using it.

    A host gets an entry only once it answered 429/503 with Retry-After or failed: the fast
    path is one dict lookup."""

    def __init__(
        self, circuit_failures: int = CIRCUIT_FAILURES, circuit_open_s: float = CIRCUIT_OPEN_S
    ) -> None:
        self.circuit_failures = circuit_failures
        self.circuit_open_s = circuit_open_s
        self.lock = threading.Lock()
        self.hosts: dict[str, _Host] = {}

    def before(self, host: str, retry_on_429: bool) -> bool:
        """Wait until a request to ``host`` may go; True if it is the probe. Raises
        ``CircuitOpen``, ``Retry`` (``retry_on_429``) or ``Timeout`` (past the task's deadline)."""
        state = self.hosts.get(host)
        while state is not None:
            with self.lock:
                clock = time.monotonic()
                if state.open_until > clock:
                    raise CircuitOpen(f"{host}: circuit open for {state.open_until - clock:.1f}s more")
                wait = state.until - clock
                if wait <= 0 and not state.wants_probe:
                    return False
                if wait <= 0 and not state.probing:
                    state.probing = True
                    state.probe_done.clear()
                    return True
            if wait > 0 and retry_on_429:
                raise Retry(exc=Timeout(f"{host} asked to wait {wait:.1f}s (Retry-After)"), countdown_s=wait)
            left = remaining_s()
            pause = wait if wait > 0 else 1.0  # else: a probe is out; its answer decides
            if left is not None and left < pause:
                raise Timeout(f"{host}: held by Retry-After beyond the task's deadline")
            if wait > 0:
                time.sleep(wait)
            else:
                state.probe_done.wait(pause)
        return False

    def after(self, host: str, probe: bool, status: int | None, retry_after: float | None) -> None:
        """Record an answer (``status``; None: no answer, a connection error or timeout)."""
        state = self.hosts.get(host)
        failed = status is None or (status >= 500 and retry_after is None)
        if state is None and not failed and retry_after is None:
            return
        with self.lock:
            state = self.hosts.setdefault(host, _Host())
            clock = time.monotonic()
            if retry_after is not None:
                state.until = max(state.until, clock + retry_after)
                state.wants_probe = True
            elif failed:
                state.failures += 1
                if self.circuit_failures and state.failures >= self.circuit_failures:
                    state.open_until = clock + self.circuit_open_s
                    state.wants_probe = True
            elif probe or state.until <= clock:
                state.failures, state.wants_probe = 0, False
            if probe:
                state.probing = False
                state.probe_done.set()

    def states(self) -> dict[str, str]:
        """Hosts not in their normal state: ``open`` (circuit), ``backoff``, ``probe``, ``failing``."""
        clock, found = time.monotonic(), {}
        for host, state in list(self.hosts.items()):
            kind = "open" if state.open_until > clock else "backoff" if state.until > clock else None
            found[host] = kind or ("probe" if state.wants_probe else "failing" if state.failures else "")
        return {host: kind for host, kind in found.items() if kind}


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

    def __init__(
        self,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        circuit_failures: int = CIRCUIT_FAILURES,
        circuit_open_s: float = CIRCUIT_OPEN_S,
        retry_on_429: bool = False,
    ) -> None:
        from greenq.http_transports import make_transport

        self.pool_size = pool_size
        self.timeout_s = timeout_s
        self.retry_on_429 = retry_on_429
        self.hosts = Hosts(circuit_failures, circuit_open_s)
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
        retry_on_429: bool | None = None,
    ) -> Response:
        """Send one request and read the whole response.

        Args:
            timeout: seconds; default 30, or the running task's remaining time if shorter.
            retry_on_429: a 429/503 with Retry-After (or a host still in such a window) raises
                the task's ``Retry`` with that countdown instead of waiting (default: the
                client's, False).

        Raises:
            Timeout: no connection or no answer within ``timeout`` seconds, or the task's
                deadline passed.
            ConnectionError: refused, reset, the name did not resolve, or too many redirects;
                ``CircuitOpen``: the host's circuit is open.
            Retry: with ``retry_on_429``, inside a task.
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
        retry = self.retry_on_429 if retry_on_429 is None else retry_on_429
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, body, sent_headers, timeout, retry)
            status = response.status_code
            location = response.headers.get("location") if status in REDIRECTS else None
            if not location:
                return response
            url = urljoin(url, location)
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", None  # as browsers and requests do
                sent_headers = {k: v for k, v in sent_headers.items() if k.lower() != "content-type"}
        raise ConnectionError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | str | None,
        headers: dict[str, str],
        timeout: float | None,
        retry: bool,
    ) -> Response:
        """One request through the host's guard (back-off, circuit) with the task's deadline."""
        host = url.split("/", 3)[2] if "//" in url else url
        probe = self.hosts.before(host, retry)
        left = remaining_s()
        if timeout is None:
            timeout = self.timeout_s if left is None else min(self.timeout_s, left)
        try:
            if timeout <= 0:
                raise TimeoutError("the task's deadline has passed")
            status, got, content = self.transport.send(method, url, body, headers, timeout)
        except TimeoutError as exc:
            self.hosts.after(host, probe, None, None)
            raise Timeout(f"{method} {url}: {exc or 'timed out'}") from exc
        except builtins.ConnectionError as exc:
            self.hosts.after(host, probe, None, None)
            raise ConnectionError(f"{method} {url}: {exc}") from exc
        except BaseException:  # a bad URL, or the task ended meanwhile: the probe's turn is over
            if probe:
                self.hosts.after(host, probe, None, None)
            raise
        response = Response(status, got, content, url)
        wait = retry_after_s(response.headers.get("retry-after")) if status in (429, 503) else None
        self.hosts.after(host, probe, status, wait)
        if wait is not None and retry:
            raise Retry(exc=HTTPError(f"HTTP {status} for {url}", response), countdown_s=wait)
        return response

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
        self.circuit = (CIRCUIT_FAILURES, CIRCUIT_OPEN_S)

    def get(self) -> Client:
        client = self.client
        if client is not None and self.pid == os.getpid():
            return client
        with self.lock:
            if self.client is None or self.pid != os.getpid():
                self.client = Client(self.pool_size, DEFAULT_TIMEOUT_S, *self.circuit)
                self.pid = os.getpid()
            return self.client


# NOTE: a process-wide client is the point of this module (one pool of keep-alive connections
# shared by every task), so this is the one deliberate module-level object in greenq.
_PROCESS = _ProcessClient()


def configure(
    pool_size: int | None = None, *, circuit_failures: int | None = None, circuit_open_s: float | None = None
) -> None:
    """Size the process client (the worker calls this with its concurrency before tasks run),
    and set its circuit breaker: ``circuit_failures`` in a row (0: never) open a host's circuit
    for ``circuit_open_s``."""
    failures, open_s = _PROCESS.circuit
    _PROCESS.circuit = (
        failures if circuit_failures is None else circuit_failures,
        open_s if circuit_open_s is None else circuit_open_s,
    )
    if _PROCESS.client is not None:
        _PROCESS.client.hosts.circuit_failures, _PROCESS.client.hosts.circuit_open_s = _PROCESS.circuit
    if pool_size is None:
        return
    _PROCESS.pool_size = max(1, pool_size)
    if _PROCESS.client is not None and _PROCESS.client.pool_size != _PROCESS.pool_size:
        _PROCESS.client.close()
        _PROCESS.client = None


def client() -> Client:
    """This process's shared client."""
    return _PROCESS.get()


def host_states() -> dict[str, str]:
    """The process client's hosts in back-off, with an open circuit or failing (heartbeat, metrics)."""
    made = _PROCESS.client
    return made.hosts.states() if made is not None and _PROCESS.pid == os.getpid() else {}


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
