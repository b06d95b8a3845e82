"""Redis Sentinel: ``redis+sentinel://`` broker URLs, the master they name, and connections that
follow it through a failover.

``redis+sentinel://[user:password@]s1:26379,s2:26379/SERVICE[/DB][?options]`` (``rediss+sentinel``
for TLS to the master). The user and password are the master's, as redis-py's ``Sentinel`` takes
them in its ``connection_kwargs``; ``sentinel_username``, ``sentinel_password`` and
``sentinel_ssl=true`` in the query are the sentinels' own (redis-py's ``sentinel_kwargs``), and
``sentinel_ssl`` gives them the ``ssl_*`` options too (with ``redis+sentinel://``, only them: TLS
to the sentinels, not to the master); any other query option (``ssl_*``, ``socket_keepalive`` ...)
is the master's, as in a ``redis://`` URL.

Every connection greenq opens is made from the broker URL, so ``connection_pool`` is the one
place that turns such a URL into connections: each one asks the sentinels for the master when it
connects and checks that the server it reached is a master (``ROLE``). A failover is noticed
three ways: the connection drops (a killed master, or the sentinels' ``CLIENT KILL`` when they
turn the old master into a replica); a write answers ``READONLY`` (a demoted master); or, before
either, the sentinels name another master (asked at most every ``CHECK_S`` per process, when a
connection is used). Each raises redis-py's ``ConnectionError`` and drops the connection, so the
caller's ordinary reconnect path connects to the new master: a worker loop backs off and
retries, and the fetcher returns what a lost reply may have reserved (docs/semantics.md).
Imports: redis, exceptions; producer-safe (no gevent).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis
import redis.asyncio
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from greenq.exceptions import ConfigError

SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
DEFAULT_PORT = 26379
CHECK_S = 0.5  # how often (at most, per process) a connection's master is checked with the sentinels
SENTINEL_TIMEOUT_S = 1.0  # each question to one sentinel; a dead one must not hold a reconnect long
_READONLY = "You can't write against a read only replica"  # also inside a script's error (Redis 6.2)


def is_sentinel(url: str | None) -> bool:
    return bool(url) and str(url).partition("://")[0] in SCHEMES


@dataclass(frozen=True)
class Spec:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    master: dict[str, Any] = field(hash=False)  # redis-py connection kwargs of the master (no host)
    tls: bool
    sentinel: dict[str, Any] = field(hash=False)  # connection kwargs of each sentinel


def parse(url: str) -> Spec:
    """``ConfigError`` names what is wrong with the URL (its password never shown)."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
    form = "redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB]"
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = tuple(_host(h, shown, form) for h in hosts.split(",") if h)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not sentinels or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(f"malformed Sentinel URL {shown!r}: expected {form}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    sentinel: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "username": query.pop("sentinel_username", None),
        "password": query.pop("sentinel_password", None),
    }
    sentinel_tls = query.pop("sentinel_ssl", "false").strip().lower() in ("1", "true", "yes")
    base = SCHEMES[parts.scheme]
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    db = path[1] if len(path) == 2 else "0"
    master = redis.connection.parse_url(f"{base}://{userinfo}localhost/{db}?{urlencode(query)}")
    master.pop("host", None)
    master.pop("port", None)
    master.pop("connection_class", None)
    tls = {k: v for k, v in master.items() if k.startswith("ssl_")}
    if sentinel_tls:
        sentinel.update(tls, ssl=True)
    if base != "rediss":  # the ssl_* options are the sentinels' alone (redis-py's plain
        if tls and not sentinel_tls:  # connections refuse them with a TypeError)
            raise ConfigError(
                f"Sentinel URL {shown!r}: {', '.join(sorted(tls))} without TLS; use rediss+sentinel://"
                " for TLS to the master, sentinel_ssl=true for TLS to the sentinels"
            )
        for key in tls:
            master.pop(key)
    return Spec(sentinels, path[0], master, base == "rediss", sentinel)


def _host(text: str, shown: str, form: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    if not host or not port.isdigit():
        raise ConfigError(f"malformed Sentinel URL {shown!r}: bad sentinel address {text!r}; expected {form}")
    return host.strip("[]"), int(port)


class Resolver:
    """The current master of one Sentinel service, as the first sentinel that knows it says;
    shared by every connection of a process made from one URL (``resolver``)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.address: tuple[str, int] | None = None
        self.checked = 0.0  # time.monotonic() of the last answer (or failed attempt)
        self._lock = threading.Lock()
        self._clients = [
            redis.Redis(host=h, port=p, protocol=2, **_set(spec.sentinel)) for h, p in spec.sentinels
        ]

    def master(self, max_age_s: float = 0.1) -> tuple[str, int]:
        """The master's address, asked again unless the last answer is younger than ``max_age_s``.
        Raises redis-py's ``ConnectionError`` when no sentinel names one."""
        if self.address is not None and time.monotonic() - self.checked < max_age_s:
            return self.address
        return self.ask()

    def due(self) -> bool:
        return time.monotonic() - self.checked >= CHECK_S

    def moved(self, address: tuple[str, int]) -> bool:
        """Do the sentinels now name another master than ``address``? Asks them at most every
        ``CHECK_S`` (one caller asks, the others use the last answer); sentinels that cannot be
        reached change nothing: the connection itself will fail if its server is gone."""
        if self.due() and self._lock.acquire(blocking=False):
            try:
                self.ask()
            except RedisConnectionError:
                self.checked = time.monotonic()
            finally:
                self._lock.release()
        return self.address is not None and self.address != address

    def ask(self) -> tuple[str, int]:
        errors = []
        for index, client in enumerate(self._clients):
            try:
                reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.spec.service)
            except (RedisConnectionError, redis.exceptions.TimeoutError, ResponseError, OSError) as exc:
                errors.append(f"{client.connection_pool.connection_kwargs['port']}: {exc}")
                continue
            if not reply:
                errors.append(f"{client.connection_pool.connection_kwargs['port']}: unknown service")
                continue
            if index:  # ask the one that answered first next time, as redis-py's Sentinel does
                self._clients.insert(0, self._clients.pop(index))
            self.address = (_text(reply[0]), int(reply[1]))
            self.checked = time.monotonic()
            return self.address
        self.checked = time.monotonic()
        hosts = ",".join(f"{h}:{p}" for h, p in self.spec.sentinels)
        raise RedisConnectionError(
            f"no sentinel of {hosts} names a master for {self.spec.service!r}: {'; '.join(errors)}"
        )

    def forget(self) -> None:
        """The master we were told of refused a write: ask the sentinels on the next connect."""
        self.checked = 0.0


@cache
def resolver(url: str) -> Resolver:
    """The process's resolver for this URL (so its connections ask the sentinels once, together)."""
    return Resolver(parse(url))


def _set(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _role_error(conn: Any, role: Any) -> RedisConnectionError | None:
    if isinstance(role, (list, tuple)) and role and _text(role[0]) != "master":
        conn_at = f"{conn.host}:{conn.port}"
        return RedisConnectionError(f"Sentinel named {conn_at} as master, but it is a {_text(role[0])}")
    return None  # a master, or ROLE refused (an ACL without it): trust the sentinels


class _FollowsMaster:
    """Mixed into redis-py's connection classes: connect to the master the sentinels name."""

    resolver: Resolver
    host: str
    port: int
    _sock: Any

    def __init__(self, *, resolver: Resolver, raise_on_move: bool = False, **kwargs: Any) -> None:
        self.resolver = resolver
        self.raise_on_move = raise_on_move
        super().__init__(**kwargs)

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        self.host, self.port = self.resolver.master()
        super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        self.send_command("ROLE")  # type: ignore[attr-defined]
        try:
            error = _role_error(self, super().read_response())  # type: ignore[misc]
        except ResponseError:
            error = None
        if error is not None:
            self.resolver.forget()
            self.disconnect()  # type: ignore[attr-defined]
            raise error

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is not None and self.resolver.moved((self.host, self.port)):
            was = f"{self.host}:{self.port}"
            self.disconnect()  # type: ignore[attr-defined]
            if self.raise_on_move:  # a worker's link: its owner must look for lost writes
                raise RedisConnectionError(
                    f"Sentinel: the master moved from {was} to {self.resolver.address}"
                )
        super().send_packed_command(command, check_health)  # type: ignore[misc]  # connects anew

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if _READONLY not in str(exc):
                raise
            self.resolver.forget()
            self.disconnect()  # type: ignore[attr-defined]
            raise RedisConnectionError(f"{self.host}:{self.port} is a replica now (failover)") from exc

    def stale(self) -> bool:
        """For connections read outside redis-py (``greenq.redis_mux``): has the master moved?"""
        return self._sock is not None and self.resolver.moved((self.host, self.port))


class SentinelConnection(_FollowsMaster, redis.Connection):
    pass


class SentinelSSLConnection(_FollowsMaster, redis.SSLConnection):
    pass


class _AsyncFollowsMaster:
    """The same for ``redis.asyncio``; the sentinels are asked in a thread, off the event loop."""

    resolver: Resolver
    host: str
    port: int
    is_connected: bool

    def __init__(self, *, resolver: Resolver, **kwargs: Any) -> None:
        self.resolver = resolver
        super().__init__(**kwargs)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        self.host, self.port = await asyncio.to_thread(self.resolver.master)
        await super().connect_check_health(check_health, retry_socket_connect)  # type: ignore[misc]
        await self.send_command("ROLE")  # type: ignore[attr-defined]
        try:
            error = _role_error(self, await super().read_response())  # type: ignore[misc]
        except ResponseError:
            error = None
        if error is not None:
            self.resolver.forget()
            await self.disconnect()  # type: ignore[attr-defined]
            raise error

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.is_connected:
            address = (self.host, self.port)
            moved = await asyncio.to_thread(self.resolver.moved, address) if self.resolver.due() else False
            if moved or (self.resolver.address is not None and self.resolver.address != address):
                await self.disconnect()  # type: ignore[attr-defined]
                await self.connect_check_health(check_health=False)  # to the new master, unsent
        await super().send_packed_command(command, check_health)  # type: ignore[misc]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            if _READONLY not in str(exc):
                raise
            self.resolver.forget()
            await self.disconnect()  # type: ignore[attr-defined]
            raise RedisConnectionError(f"{self.host}:{self.port} is a replica now (failover)") from exc


class AsyncSentinelConnection(_AsyncFollowsMaster, redis.asyncio.Connection):
    pass


class AsyncSentinelSSLConnection(_AsyncFollowsMaster, redis.asyncio.SSLConnection):
    pass


def connection_pool(pool_class: Any, url: str, raise_on_move: bool = False, **kwargs: Any) -> Any:
    """``pool_class.from_url(url, **kwargs)``, for ``redis+sentinel://`` URLs too (redis-py's
    sync or asyncio pools and their subclasses): its connections follow the service's master.

    When the sentinels name a new master, a connection about to send reconnects to it first (the
    command was not sent yet, so nothing runs twice); with ``raise_on_move`` (a worker's links)
    it raises ``ConnectionError`` instead, so that the owner checks for writes the old master
    took and lost (sync connections only: the asyncio producer always reconnects)."""
    if url.startswith("sentinel://"):
        raise ConfigError(
            "broker_url: Celery's sentinel://HOST;sentinel://HOST form is not greenq's; use"
            " redis+sentinel://HOST:PORT,HOST:PORT/SERVICE/DB (docs/scaling.md)"
        )
    if url.partition("://")[0].endswith("+cluster"):  # sync callers branch before (cluster.py)
        raise ConfigError(
            "Redis Cluster URLs are routed by broker.cluster (sync) and broker.cluster_aio (asyncio),"
            " not through one connection pool"
        )
    if not is_sentinel(url):
        return pool_class.from_url(url, **kwargs)
    found = resolver(url)
    if issubclass(pool_class, redis.asyncio.ConnectionPool):
        connection_class: Any = AsyncSentinelSSLConnection if found.spec.tls else AsyncSentinelConnection
    else:
        connection_class = SentinelSSLConnection if found.spec.tls else SentinelConnection
    options = {**found.spec.master, **kwargs}
    if raise_on_move and connection_class in (SentinelConnection, SentinelSSLConnection):
        options["raise_on_move"] = True
    return pool_class(connection_class=connection_class, resolver=found, **options)
