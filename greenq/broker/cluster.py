"""Redis Cluster: ``redis+cluster://`` broker URLs, and the router that sends greenq's pipelines
and transactions to the masters owning their keys.

``redis+cluster://[user:password@]host:port[,host:port...][?options]`` (``rediss+cluster`` for
TLS) names some nodes; the slot map is asked of them (``CLUSTER SLOTS``). A ``ClusterRouter``
takes the same command lists as a worker's ``Link`` or the producer's stack: it sends each
command to the master of its key's slot, one pipeline per node, and returns the replies in
order. ``MOVED`` refreshes the map and sends the command again, ``ASK`` sends it once to the
importing node (neither ran the command); a connection error drops the node's connection, marks
the map stale and raises ``BrokerUnavailable``, which every caller already retries after a
back-off (a failover: the next attempt finds the promoted replica).

Every greenq script touches one queue's keys (one slot), but three also read keys tagged by
task or consumer id; the router splits those into per-slot calls and merges their replies
(``_split``): ``store_results.lua`` (one call per result), ``start.lua`` (one per queue, then
``EXISTS`` of the revocation keys), ``recover.lua`` and ``release_held.lua`` (the dead worker's
heartbeat checked by an ``EXISTS`` just before, instead of inside the script). A transaction
(``MULTI``) is run as one ``MULTI`` per slot, those without an ``XACK`` first: results, chord
counts and a chain's next step are written before the acks, and a retry's delayed message goes
in the same ``MULTI`` as the ack of its old message (docs/scaling.md, "Redis Cluster").
Imports: redis, config, exceptions; the wire helpers are passed in by ``broker.stack``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.connection
from redis.exceptions import AskError, MovedError, ResponseError

from greenq.broker.cluster_scripts import Command, heartbeat, merge, name_of, slot, split_all
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable, ConfigError

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
NETWORK_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
SLOTS = 16384
_KEY_AT = {"XINFO": 2, "XGROUP": 2, "OBJECT": 2, "MEMORY": 2}  # after a subcommand
_NO_KEY = frozenset({"TIME", "PING", "INFO", "MULTI", "EXEC", "ASKING", "CLUSTER", "SCRIPT", "CLIENT"})
Exchange = Callable[[Any, list[bytes], int, str], list[Any]]
Pack = Callable[[Any, Sequence[Command]], list[bytes]]


def is_cluster(url: str | None) -> bool:
    return bool(url) and str(url).partition("://")[0] in SCHEMES


def parse(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """(startup nodes, connection kwargs of every node) of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    nodes = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ConfigError(
                f"malformed Redis Cluster URL {mask_url(url)!r}: expected"
                " redis+cluster://[user:password@]host:port[,host:port...]"
            )
        nodes.append((name.strip("[]"), int(port)))
    if not nodes or parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"Redis Cluster URL {mask_url(url)!r}: give nodes and no database (only 0)")
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = urlencode(dict(parse_qsl(parts.query, keep_blank_values=True)))
    options = redis.connection.parse_url(f"{SCHEMES[parts.scheme]}://{userinfo}localhost/0?{query}")
    for name in ("host", "port", "db", "connection_class"):
        options.pop(name, None)
    options["ssl"] = parts.scheme == "rediss+cluster"
    return nodes, options


def client(url: str, **kwargs: Any) -> Any:
    """redis-py's ``RedisCluster`` for this URL (operator commands, ``app.redis``). It asks for
    the slot map as it is made: no node answering raises ``BrokerUnavailable``, as a first
    command to one Redis would (redis-py raises its own ``RedisClusterException``)."""
    nodes, options = parse(url)
    startup = [redis.cluster.ClusterNode(host, port) for host, port in nodes]
    try:
        return redis.RedisCluster(startup_nodes=startup, **{**options, **kwargs})
    except (redis.exceptions.RedisClusterException, *NETWORK_ERRORS) as exc:
        raise BrokerUnavailable(f"broker {mask_url(url)} unavailable: {exc}") from exc


def key_of(command: Command) -> Any:
    """The first key a command names (None: any node may run it)."""
    name = command[0].decode() if isinstance(command[0], bytes) else str(command[0]).upper()
    if name in _NO_KEY:
        return None
    if name in ("EVAL", "EVALSHA"):
        return command[3] if int(command[2]) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        words = [str(w).upper() if isinstance(w, str) else w for w in command]
        at = words.index("STREAMS") if "STREAMS" in words else words.index(b"STREAMS")
        return command[at + 1]
    return command[_KEY_AT.get(name, 1)] if len(command) > _KEY_AT.get(name, 1) else None


def slot_of(command: Command) -> int | None:
    key = key_of(command)
    return None if key is None else slot(key)


class SlotMap:
    """Which master owns each slot; asked of any node that answers, again when told it moved."""

    def __init__(self, nodes: list[tuple[str, int]]) -> None:
        self.known = list(nodes)
        self.owner: list[tuple[str, int] | None] = [None] * SLOTS
        self.stale = True
        self._lock = threading.Lock()

    def refresh(self, ask: Callable[[tuple[str, int]], Any]) -> None:
        with self._lock:
            errors = []
            for address in list(self.known):
                try:
                    self.install(address, ask(address))
                    return
                except BrokerUnavailable as exc:
                    errors.append(str(exc))
            raise BrokerUnavailable(f"no node of the cluster answers: {'; '.join(errors)[:500]}")

    def install(self, address: tuple[str, int], ranges: Any) -> None:
        """Take ``address``'s ``CLUSTER SLOTS`` reply as the map (the asyncio router asks on
        its own connections, then calls this)."""
        if not isinstance(ranges, list):
            raise BrokerUnavailable(f"CLUSTER SLOTS at {address[0]}:{address[1]}: {ranges}")
        owner: list[tuple[str, int] | None] = [None] * SLOTS
        for start, end, master, *_ in ranges:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            node = (host or address[0], int(master[1]))
            owner[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
            if node not in self.known:
                self.known.append(node)
        self.owner, self.stale = owner, False

    def node(self, slot: int | None) -> tuple[str, int]:
        found = self.owner[slot] if slot is not None else next((o for o in self.owner if o), None)
        return found or self.known[0]


@cache
def slot_map(url: str) -> SlotMap:
    """The process's slot map for this URL, shared by its routers."""
    return SlotMap(parse(url)[0])


class ClusterRouter:
    """One connection per node (made as needed) and the command routing over them; owned by one
    thread at a time, as a ``Link`` is."""

    cluster = True

    def __init__(self, url: str, exchange: Exchange, pack: Pack, **connection: Any) -> None:
        self.url = url
        self.map = slot_map(url)
        self._exchange, self._pack = exchange, pack
        options = parse(url)[1]
        self._options = {**options, **connection, "protocol": 2}
        self._conns: dict[tuple[str, int], Any] = {}

    def _conn(self, address: tuple[str, int]) -> Any:
        conn = self._conns.get(address)
        if conn is None:
            options = dict(self._options)
            kind = redis.SSLConnection if options.pop("ssl", False) else redis.Connection
            conn = self._conns[address] = kind(host=address[0], port=address[1], **options)
        return conn

    def _send(self, address: tuple[str, int], commands: Sequence[Command]) -> list[Any]:
        conn = self._conn(address)
        try:
            return self._exchange(conn, self._pack(conn, commands), len(commands), self.url)
        except BrokerUnavailable:
            self.map.stale = True
            raise

    def _send_all(
        self, by_node: dict[tuple[str, int], list[int]], commands: list[Command]
    ) -> list[tuple[list[int], list[Any]]]:
        """Write every node's pipeline, then read each: the nodes work at the same time, so a
        round trip that touches N nodes costs about one, not N."""
        if len(by_node) == 1:
            ((address, indexes),) = by_node.items()
            return [(indexes, self._send(address, [commands[i] for i in indexes]))]
        sent: list[tuple[list[int], Any]] = []
        try:
            for address, indexes in by_node.items():
                conn = self._conn(address)
                sent.append((indexes, conn))
                conn.send_packed_command(self._pack(conn, [commands[i] for i in indexes]), check_health=False)
            return [(i, self._exchange(c, [], len(i), self.url)) for i, c in sent]
        except BaseException as exc:
            for _, conn in sent:  # replies may be left unread: start those afresh
                conn.disconnect()
            self.map.stale = True
            if isinstance(exc, (BrokerUnavailable, BrokerError)) or not isinstance(exc, NETWORK_ERRORS):
                raise
            raise BrokerUnavailable(f"broker {mask_url(self.url)} unavailable: {exc}") from exc

    def _slots(self, address: tuple[str, int]) -> Any:
        return self._send(address, [("CLUSTER", "SLOTS")])[0]

    def _ready(self) -> None:
        if self.map.stale:
            self.map.refresh(self._slots)

    def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send each command to its slot's master, a pipeline per node; replies in order."""
        self._ready()
        parts, merges = split_all(commands, self._alive(commands))
        return merge(self._run(parts), merges)

    def _alive(self, commands: Sequence[Sequence[Any]]) -> dict[Any, bool]:
        """The heartbeats that recover.lua and release_held.lua would check, checked first (a
        script may touch one slot only, and these keys are the dead worker's)."""
        beats = [k for k in (heartbeat(tuple(c)) for c in commands) if k is not None]
        if not beats:
            return {}
        found = self._run([("EXISTS", k) for k in beats])
        return {key: bool(int(f)) for key, f in zip(beats, found, strict=True)}

    def _run(self, commands: list[Command]) -> list[Any]:
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for _ in range(5):
            by_node: dict[tuple[str, int], list[int]] = {}
            for index in todo:
                by_node.setdefault(self.map.node(slot_of(commands[index])), []).append(index)
            todo = []
            for indexes, answers in self._send_all(by_node, commands):
                for index, reply in zip(indexes, answers, strict=True):
                    if isinstance(reply, MovedError):
                        self.map.stale = True
                        todo.append(index)
                    elif isinstance(reply, AskError):
                        reply = self._send(reply.node_addr, [("ASKING",), commands[index]])[1]
                        replies[index] = reply
                    else:
                        replies[index] = reply
            if not todo:
                return replies
            self._ready()
        raise BrokerUnavailable(f"broker {mask_url(self.url)}: slots kept moving (resharding?)")

    def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """One ``MULTI`` per slot: those without ``XACK`` first, then each queue's acks with its
        retries (see the module's docstring). Returns every command's reply, in order."""
        self._ready()
        parts, merges = split_all(commands, self._alive(commands))
        groups: dict[int | None, list[int]] = {}
        for index, command in enumerate(parts):
            groups.setdefault(slot_of(command), []).append(index)
        acks = {slot for slot, indexes in groups.items() if any(name_of(parts[i]) == "XACK" for i in indexes)}
        order = [s for s in groups if s not in acks] + [s for s in groups if s in acks]
        replies: list[Any] = [None] * len(parts)
        for group in order:
            indexes = groups[group]
            for reply, index in zip(self._multi(group, [parts[i] for i in indexes]), indexes, strict=True):
                replies[index] = reply
        return merge(replies, merges)

    def _multi(self, slot: int | None, commands: list[Command]) -> list[Any]:
        for _ in range(5):
            replies = self._send(self.map.node(slot), [("MULTI",), *commands, ("EXEC",)])
            if any(isinstance(r, MovedError | AskError) for r in replies[1:-1]):
                self.map.stale = True  # nothing ran (EXECABORT): ask the map again and resend
                self._ready()
                continue
            result = replies[-1]
            if isinstance(result, Exception) or result is None:
                first = next((r for r in replies[1:-1] if isinstance(r, Exception)), result)
                raise BrokerError(f"transaction failed: {first}")
            return list(result)
        raise BrokerUnavailable(f"broker {mask_url(self.url)}: slots kept moving (resharding?)")

    def close(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            conn.disconnect()


class Unsent(list):  # type: ignore[type-arg]
    """What ``Link.pack`` returns on a cluster: the commands, routed when sent."""

    def __init__(self, commands: Sequence[Sequence[Any]]) -> None:
        super().__init__()
        self.commands = [tuple(c) for c in commands]


class ClusterStack:
    """The producer's stack on a cluster: up to ``limit`` routers (each with a connection per
    node it talks to), LIFO, shared by every thread of the process; as ``ConnectionStack``."""

    def __init__(
        self, url: str, exchange: Exchange, pack: Pack, limit: int, wait_s: float, **conn: Any
    ) -> None:
        self.url = url
        self.limit = limit
        self._make = lambda: ClusterRouter(url, exchange, pack, **conn)
        self._wait_s = wait_s
        self._idle: list[ClusterRouter] = []
        self._slots = threading.BoundedSemaphore(limit)

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise BrokerUnavailable(
                f"broker {mask_url(self.url)}: all {self.limit} connections busy for {self._wait_s:g} s"
            )
        try:
            router = self._idle.pop() if self._idle else self._make()
            replies = router.execute(commands)
            self._idle.append(router)  # only after a clean exchange, as ConnectionStack
            return replies
        finally:
            self._slots.release()

    def call(self, *args: Any) -> Any:
        reply = self.execute([args])[0]
        if isinstance(reply, ResponseError):
            raise BrokerError(f"{name_of(args)} failed: {reply}")
        return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for router in idle:
            router.close()
