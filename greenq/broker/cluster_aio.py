"""Redis Cluster for the asyncio producer: ``ClusterRouter``'s routing on ``redis.asyncio``.

The asyncio producer (``greenq.aio``) sends the same commands as the sync one (enqueue pipelines
of ``XADD``, ``ZADD`` of the delayed set, ``SADD`` of the queue set) and waits on result streams
with ``XREAD BLOCK``. Each command has one key, so one slot: ``AsyncClusterRouter`` sends each to
its slot's master, one pipeline per node, every node's at once, and puts the replies back in
order, as ``cluster.ClusterRouter`` does; the slot map is the process's (``cluster.slot_map``),
shared with the sync routers. ``MOVED`` refreshes the map and sends the command again, ``ASK``
sends it once to the importing node; a network error marks the map stale and raises
``BrokerUnavailable`` (nothing is resent, so no message is enqueued twice), as on one Redis.
Imports: redis.asyncio, broker.cluster, broker.cluster_scripts, broker.stack (packing), config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import AskError, MovedError, ResponseError

from greenq.broker.cluster import NETWORK_ERRORS, parse, slot_map, slot_of
from greenq.broker.cluster_scripts import Command, slot
from greenq.broker.stack import denied, pack, reason
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable

Address = tuple[str, int]


class AsyncClusterRouter:
    """One event loop's connections to the cluster: the flusher's own connection per node (for
    enqueue pipelines, one flush at a time) and a blocking pool per node of up to ``limit``
    connections for result waits (each waiting ``aget()`` holds one)."""

    def __init__(self, url: str, limit: int, wait_s: float, **connection: Any) -> None:
        self.url = url
        self.map = slot_map(url)
        options = {**parse(url)[1], **connection, "protocol": 2}
        self._kind = redis.asyncio.SSLConnection if options.pop("ssl", False) else redis.asyncio.Connection
        self._options = options
        self._limit, self._wait_s = limit, wait_s
        self._conns: dict[Address, Any] = {}
        self._clients: dict[Address, redis.asyncio.Redis] = {}
        self._asking = asyncio.Lock()

    def _conn(self, address: Address) -> Any:
        conn = self._conns.get(address)
        if conn is None:
            conn = self._conns[address] = self._kind(host=address[0], port=address[1], **self._options)
        return conn

    def _client(self, address: Address) -> redis.asyncio.Redis:
        client = self._clients.get(address)
        if client is None:
            pool = redis.asyncio.BlockingConnectionPool(
                connection_class=self._kind,
                max_connections=self._limit,
                timeout=self._wait_s,
                host=address[0],
                port=address[1],
                **self._options,
            )
            client = self._clients[address] = redis.asyncio.Redis(connection_pool=pool)
        return client

    def _unavailable(self, exc: BaseException) -> BrokerUnavailable:
        self.map.stale = True
        return BrokerUnavailable(f"broker {mask_url(self.url)} unavailable: {exc}")

    async def _send(self, address: Address, commands: Sequence[Command]) -> list[Any]:
        """One pipeline to one node on the flusher's connection; error replies in place."""
        conn = self._conn(address)
        try:
            await conn.send_packed_command(pack(conn, commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except NETWORK_ERRORS as exc:
            await conn.disconnect()
            raise self._unavailable(exc) from exc
        except BaseException:
            await conn.disconnect()  # a reply may be half read: start afresh next time
            raise
        refused = next((r for r in replies if isinstance(r, ResponseError) and denied(r)), None)
        if refused is not None:
            raise BrokerError(f"broker {mask_url(self.url)}: {reason(refused)}")
        return replies

    async def _ready(self) -> None:
        """Ask the nodes for the slot map if it is stale (any one that answers), on the pools'
        connections (the flusher's may be in use); one asker at a time."""
        if not self.map.stale:
            return
        async with self._asking:
            errors = []
            for address in list(self.map.known):
                if not self.map.stale:
                    return
                try:
                    self.map.install(address, await self._client(address).execute_command("CLUSTER", "SLOTS"))
                    return
                except (*NETWORK_ERRORS, ResponseError, BrokerUnavailable) as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
            raise BrokerUnavailable(f"no node of the cluster answers: {'; '.join(errors)[:500]}")

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send each command to its slot's master, every node's pipeline at once; replies in
        order. A node that fails raises ``BrokerUnavailable`` once every node has answered (what
        the others took stays: as a failed chunk of the sync producer)."""
        await self._ready()
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        for _ in range(5):
            by_node: dict[Address, list[int]] = {}
            for index in todo:
                by_node.setdefault(self.map.node(slot_of(commands[index])), []).append(index)
            sent = [
                (idx, self._send(address, [commands[i] for i in idx])) for address, idx in by_node.items()
            ]
            answers = await asyncio.gather(*(call for _, call in sent), return_exceptions=True)
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                raise failed
            todo = []
            for (indexes, _), node_replies in zip(sent, answers, strict=True):
                for index, reply in zip(indexes, node_replies, strict=True):  # type: ignore[arg-type]
                    if isinstance(reply, MovedError):
                        self.map.stale = True
                        todo.append(index)
                    elif isinstance(reply, AskError):
                        asked = await self._send(reply.node_addr, [("ASKING",), commands[index]])
                        replies[index] = asked[1]
                    else:
                        replies[index] = reply
            if not todo:
                return replies
            await self._ready()
        raise BrokerUnavailable(f"broker {mask_url(self.url)}: slots kept moving (resharding?)")

    async def xread(self, key: str, after: str, block_ms: int) -> Any:
        """``XREAD COUNT 1000 BLOCK block_ms STREAMS key after`` on the master of ``key``'s slot,
        on a connection of that node's pool."""
        for _ in range(5):
            await self._ready()
            client = self._client(self.map.node(slot(key)))
            try:
                return await client.xread({key: after}, count=1000, block=block_ms)
            except MovedError:
                self.map.stale = True
            except AskError as exc:
                pipe = self._client(exc.node_addr).pipeline(transaction=False)
                pipe.execute_command("ASKING")
                pipe.xread({key: after}, count=1000, block=block_ms)
                return (await pipe.execute())[1]
            except NETWORK_ERRORS as exc:
                raise self._unavailable(exc) from exc
        raise BrokerUnavailable(f"broker {mask_url(self.url)}: slots kept moving (resharding?)")

    async def aclose(self) -> None:
        conns, self._conns = self._conns, {}
        clients, self._clients = self._clients, {}
        for conn in conns.values():
            await conn.disconnect()
        for client in clients.values():
            await client.connection_pool.disconnect()
