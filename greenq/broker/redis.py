"""RedisBroker: greenq's keyspace on Redis Streams, and every round trip to it.

Owns the key names (only ``Keys`` builds them), the Lua scripts in ``scripts/`` and the
translation of redis-py errors into greenq's. Must not import the worker or pools.

Keyspace (docs/keyspace.md has the redis-cli commands to look at each):

* ``greenq:{q:NAME}:stream``        stream of ready messages, priority 0; ``...:stream:pP`` for P in 1..9
* ``greenq:{q:NAME}:delayed``       sorted set of ETA/countdown/retry messages, score = due ms
* ``greenq:{q:NAME}:dead``          stream of dead letters, with reason, time and worker
* ``greenq:result:{ID}``            stream (one entry) holding a task's latest state, with a TTL
* ``greenq:worker:{CONSUMER}``      a worker's heartbeat (JSON stats), TTL = worker_lost_timeout
* ``greenq:workers``, ``greenq:queues``  sets of known consumers and queues, for ``greenq status``

Every key of one queue shares the hash tag ``{q:NAME}``. Each stream has one consumer group,
``greenq``; its pending-entries list is the set of unacked messages.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.exceptions

from greenq.broker import Delivery
from greenq.broker.stack import NETWORK_ERRORS as _NETWORK_ERRORS
from greenq.broker.stack import ConnectionStack, exchange, pack
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable, ConfigError
from greenq.message import PRIORITY_MAX, PRIORITY_MIN, Message, now

GROUP = "greenq"
ENQUEUE_CHUNK = 5000
EVENTS_MAX = 100_000
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


def check_queue_name(name: str) -> str:
    """Queue names are letters, digits and ``_ . : @ -``: they go inside a ``{}`` hash tag."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ConfigError(f"invalid queue name {name!r}: use letters, digits and _ . : @ -")
    return name


class Keys:
    """The only place greenq's Redis key names are built."""

    @staticmethod
    def stream(queue: str, priority: int = 0) -> str:
        base = f"greenq:{{q:{queue}}}:stream"
        return base if priority == 0 else f"{base}:p{priority}"

    @staticmethod
    @cache
    def bands(queue: str) -> tuple[str, ...]:
        """The queue's band streams, highest priority first (fetch order)."""
        return tuple(Keys.stream(queue, p) for p in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1))

    @staticmethod
    def delayed(queue: str) -> str:
        return f"greenq:{{q:{queue}}}:delayed"

    @staticmethod
    def dead(queue: str) -> str:
        return f"greenq:{{q:{queue}}}:dead"

    @staticmethod
    def dead_dropped(queue: str) -> str:
        return f"greenq:{{q:{queue}}}:dead:dropped"

    @staticmethod
    def result(task_id: str) -> str:
        return f"greenq:result:{{{task_id}}}"

    @staticmethod
    def worker(consumer: str) -> str:
        return f"greenq:worker:{{{consumer}}}"

    @staticmethod
    def revoked(task_id: str) -> str:
        return f"greenq:revoked:{{{task_id}}}"

    EVENTS = "greenq:events"
    WORKERS = "greenq:workers"
    QUEUES = "greenq:queues"


_STREAM_KEY = re.compile(r"^greenq:\{q:(?P<queue>.+)\}:stream(?::p(?P<priority>\d))?$")


def parse_stream_key(key: str) -> tuple[str, int]:
    """``greenq:{q:http}:stream:p5`` -> ("http", 5)."""
    match = _STREAM_KEY.match(key)
    if not match:
        raise BrokerError(f"not a greenq stream key: {key!r}")
    return match["queue"], int(match["priority"] or 0)


@cache
def script(name: str) -> str:
    """The text of ``scripts/<name>.lua`` (run with EVAL: Redis caches it by SHA, and a restarted
    server needs no SCRIPT LOAD)."""
    return resources.files("greenq.broker").joinpath("scripts", f"{name}.lua").read_text()


def wait_slices(timeout_s: float | None, socket_timeout_s: float) -> Iterator[int]:
    """BLOCK milliseconds for successive XREADs that together wait ``timeout_s`` (None: for
    ever). Each ends well before the socket timeout would call a live server dead."""
    slice_ms = max(1, int(max(socket_timeout_s - 1.0, socket_timeout_s / 2) * 1000))
    deadline = None if timeout_s is None else now() + timeout_s
    while True:
        if deadline is None:
            yield slice_ms
            continue
        left_ms = int((deadline - now()) * 1000)
        if left_ms <= 0:
            return
        yield min(slice_ms, left_ms)


def _field(flat: Sequence[Any], name: bytes) -> Any:
    """The value of ``name`` in a raw RESP2 field list [name, value, name, value, ...]."""
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == name:
            return flat[i + 1]
    raise BrokerError(f"stream entry lacks field {name.decode()!r}: {flat!r}"[:300])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Link:
    """One dedicated Redis connection for one worker thread or greenlet.

    No pool checkout, no locks, no per-command health check: the owner sends whole pipelines
    and reads the replies. A broken connection raises ``BrokerUnavailable`` and reconnects on
    the next call.
    """

    def __init__(self, url: str, connect_timeout_s: float, socket_timeout_s: float) -> None:
        self.url = url
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            health_check_interval=0,
            protocol=2,
        )
        self._conn = client.connection_pool.make_connection()
        # The band tails (newest ids) the fetcher last saw when it left the bands empty: where
        # its next XREAD BLOCK starts (RedisBroker.reserve, small capacities).
        self.tails: list[str] | None = None

    def pack(self, commands: Sequence[Sequence[Any]]) -> list[bytes]:
        """The commands in the wire protocol, for ``send`` (see ``stack.pack``)."""
        return pack(self._conn, commands)

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all commands in one write and read every reply; error replies are returned in place."""
        return self.send(self.pack(commands), len(commands))

    def send(self, packed: list[bytes], count: int) -> list[Any]:
        """Send commands packed by ``pack`` and read their ``count`` replies (see ``exchange``)."""
        return exchange(self._conn, packed, count, self.url)

    def call(self, *args: Any) -> Any:
        """One command; an error reply raises ``BrokerError``."""
        reply = self.pipeline([args])[0]
        if isinstance(reply, Exception):
            raise BrokerError(f"{_text(args[0])} failed: {reply}")
        return reply

    def transaction(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run commands in MULTI/EXEC: all of them or none, in one round trip."""
        replies = self.pipeline([("MULTI",), *commands, ("EXEC",)])
        result = replies[-1]
        if isinstance(result, Exception) or result is None:
            raise BrokerError(f"transaction failed: {result or replies}")
        return list(result)

    def close(self) -> None:
        self._conn.disconnect()


class RedisBroker:
    """Redis Streams broker. Thread- and greenlet-safe on the producer side (redis-py pool);
    worker-side methods take a ``Link`` owned by the calling thread."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        socket_timeout_s: float = 10.0,
        dead_letter_max: int = 10000,
        pool_limit: int = 1000,
    ) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.dead_letter_max = dead_letter_max
        # RESP2 everywhere: reply shapes must not change with the redis-py version's default.
        # A blocking pool: with more concurrent callers than connections (hundreds of greenlets
        # waiting in get()), callers wait for a free connection instead of failing.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_limit,
            timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            protocol=2,
        )
        self.client = redis.Redis(connection_pool=pool)  # admin and tools: the full redis-py API
        # Enqueue and result reads: the hot producer path, on raw connections (see stack.py).
        self.conns = ConnectionStack(url, pool.make_connection, pool_limit, socket_timeout_s)
        self._known_queues: set[str] = set()
        # (queues, consumer, per band, block ms) -> the packed XREADGROUP BLOCK and its bands
        self._blocking_read: tuple[Any, list[bytes], dict[str, tuple[str, int]]] = (None, [], {})

    def __repr__(self) -> str:
        return f"RedisBroker({mask_url(self.url)!r})"

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Translate redis-py errors at the boundary; the URL is shown with its password masked."""
        try:
            yield
        except _NETWORK_ERRORS as exc:
            raise BrokerUnavailable(f"broker {mask_url(self.url)} unavailable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"broker {mask_url(self.url)}: {exc}") from exc

    # ---- producer side -------------------------------------------------------------

    def _enqueue_commands(self, chunk: Sequence[tuple[Message, bytes]]) -> list[tuple[Any, ...]]:
        new_queues = {message.queue for message, _ in chunk} - self._known_queues
        commands: list[tuple[Any, ...]] = [("SADD", Keys.QUEUES, *sorted(new_queues))] if new_queues else []
        clock = now()
        for message, body in chunk:
            if message.eta is not None and message.eta > clock:
                member = b"%d|%s" % (message.priority, body)
                commands.append(("ZADD", Keys.delayed(message.queue), int(message.eta * 1000), member))
            else:
                commands.append(("XADD", Keys.stream(message.queue, message.priority), "*", "m", body))
        return commands

    def enqueue(self, items: Sequence[tuple[Message, bytes]]) -> None:
        """Add messages: ready ones to their band stream, future ones to the delayed set.

        Pipelined in chunks of ``ENQUEUE_CHUNK`` messages per round trip, without MULTI: a
        failure part way raises ``BrokerUnavailable`` and earlier chunks stay enqueued.
        """
        for start in range(0, len(items), ENQUEUE_CHUNK):
            chunk = items[start : start + ENQUEUE_CHUNK]
            replies = self.conns.execute(self._enqueue_commands(chunk))
            failed = next((r for r in replies if isinstance(r, redis.exceptions.ResponseError)), None)
            if failed is not None:
                raise BrokerError(f"broker {mask_url(self.url)}: enqueue failed: {failed}")
            self._known_queues.update(message.queue for message, _ in chunk)

    def read_result(self, task_id: str) -> bytes | None:
        """The latest state payload of a task, or None (PENDING or expired)."""
        entries = self.conns.call("XREVRANGE", Keys.result(task_id), "+", "-", "COUNT", 1)
        return _field(entries[0][1], b"r") if entries else None

    def wait_result(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> tuple[str, bytes] | None:
        """Block until the task's result stream gets an entry newer than ``after``.

        Blocks in Redis (XREAD BLOCK), woken by the worker's write: no polling. Waits in slices
        shorter than the socket timeout so a dead server is still noticed. Returns
        (entry id, payload) or None on timeout.
        """
        key = Keys.result(task_id)
        for block_ms in wait_slices(timeout_s, self.socket_timeout_s):
            reply = self.conns.call("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", key, after)
            if reply:
                entry_id, fields = reply[0][1][-1]
                return _text(entry_id), _field(fields, b"r")
        return None

    def forget(self, task_id: str) -> None:
        with self.guard():
            self.client.delete(Keys.result(task_id))

    def ping(self) -> None:
        """Raise ``BrokerUnavailable`` unless the server answers."""
        with self.guard():
            self.client.ping()

    # ---- worker side (each call takes the caller's own Link) -----------------------

    def connect(self, role: str, block_s: float = 0.0) -> Link:
        """A dedicated connection; ``block_s`` is the longest BLOCK the owner will use."""
        return Link(self.url, self.connect_timeout_s, max(self.socket_timeout_s, block_s + 5.0))

    def fetch(
        self, link: Link, queues: Sequence[str], consumer: str, count: int, block_ms: int
    ) -> list[Delivery]:
        """Reserve up to ``count`` messages, queues in the given order, high priority first;
        when there are none, wait up to ``block_ms`` for the next. See ``reserve``."""
        return self.reserve(link, queues, consumer, count, block_ms)[0]

    def reserve(
        self,
        link: Link,
        queues: Sequence[str],
        consumer: str,
        count: int,
        block_ms: int,
        drained: bool = False,
    ) -> tuple[list[Delivery], bool]:
        """Reserve up to ``count`` messages; returns (deliveries, drained).

        Unless ``drained``, first one EVAL of ``fetch.lua`` per queue until ``count`` is reached:
        queues in the given order, bands high priority first. If that reserves nothing (or the
        caller says the bands were just seen empty: ``drained``), one ``XREADGROUP ... BLOCK`` on
        every band stream waits for the next messages and reserves them in the same round trip.

        ``drained`` in the reply is True when this call saw every band empty once it was done, so
        that a caller that calls again straight away (without waiting for capacity) may skip
        the non-blocking pass: an idle worker then costs one round trip per wake-up.

        The blocking read asks ``count // bands`` messages of each band, so that it can never
        reserve more than ``count`` in all. Below one per band (a worker holding fewer messages
        than it has band streams), it waits with ``XREAD BLOCK`` on the band tails instead and
        reserves with ``fetch.lua`` when woken; ``fetch.lua`` returns the tails whenever it
        leaves the bands empty, so a drained call goes straight to the XREAD as well.
        """
        keys = [key for queue in queues for key in Keys.bands(queue)]
        per_band = count // len(keys)
        if per_band < 1:
            return self._reserve_tails(link, queues, keys, consumer, count, block_ms, drained)
        if drained and block_ms > 0:
            return self._reserve_blocking(link, queues, consumer, per_band, block_ms)
        deliveries, _ = self._fetch_once(link, queues, consumer, count, want_tails=False)
        if deliveries or block_ms <= 0:
            return deliveries, len(deliveries) < count
        return self._reserve_blocking(link, queues, consumer, per_band, block_ms)

    def _reserve_tails(
        self,
        link: Link,
        queues: Sequence[str],
        keys: list[str],
        consumer: str,
        count: int,
        block_ms: int,
        drained: bool,
    ) -> tuple[list[Delivery], bool]:
        """``reserve`` for fewer than one message per band: fetch.lua, and XREAD BLOCK on the
        tails it saw (kept on the link) to wait for the next message."""
        tails = link.tails if drained else None
        link.tails = None
        if tails is None or block_ms <= 0:
            deliveries, tails = self._fetch_once(link, queues, consumer, count)
            if deliveries or block_ms <= 0:
                if len(deliveries) < count and len(tails) == len(keys):
                    link.tails = tails
                return deliveries, len(deliveries) < count
        woken = link.pipeline([("XREAD", "COUNT", 1, "BLOCK", block_ms, "STREAMS", *keys, *tails)])[0]
        if woken is None:  # timed out: nothing newer than the tails, which still hold
            link.tails = tails
            return [], True
        deliveries, tails = self._fetch_once(link, queues, consumer, count)
        if len(deliveries) < count and len(tails) == len(keys):
            link.tails = tails
        return deliveries, len(deliveries) < count

    def _reserve_blocking(
        self, link: Link, queues: Sequence[str], consumer: str, per_band: int, block_ms: int
    ) -> tuple[list[Delivery], bool]:
        """One XREADGROUP BLOCK on every band: returns at once what is there, else waits."""
        # The same command, packed once, call after call while the worker idles.
        key = (tuple(queues), consumer, per_band, block_ms)
        cached = self._blocking_read  # one read: another thread's fetcher may replace it
        if cached[0] != key:
            keys = [k for queue in queues for k in Keys.bands(queue)]
            command = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", per_band, "BLOCK", max(1, block_ms))
            packed = link.pack([(*command, "STREAMS", *keys, *[">"] * len(keys))])
            bands = {k: (q, PRIORITY_MAX - i) for q in queues for i, k in enumerate(Keys.bands(q))}
            cached = self._blocking_read = (key, packed, bands)
        _, packed, bands = cached
        reply = link.send(packed, 1)[0]
        if isinstance(reply, Exception):
            # NOGROUP: a band or its group does not exist (yet, or any more: deleted while this
            # read waited); Redis 7 answers UNBLOCKED when a stream is deleted under the read.
            if not str(reply).startswith(("NOGROUP", "UNBLOCKED")):
                raise BrokerError(f"XREADGROUP failed: {reply}")
            self.create_groups(link, list(bands))
            return [], False
        if not reply:
            return [], True
        deliveries: list[Delivery] = []
        drained = True
        for stream_key, entries in reply:
            stream = _text(stream_key)
            queue, priority = bands[stream]
            drained = drained and len(entries) < per_band
            for entry_id, fields in entries:
                body, delivery_count = b"", 1
                for i in range(0, len(fields or ()), 2):
                    if fields[i] == b"m":
                        body = fields[i + 1]
                    elif fields[i] == b"d":
                        delivery_count = int(fields[i + 1])
                deliveries.append(Delivery(stream, _text(entry_id), body, delivery_count, queue, priority))
        return deliveries, drained

    def create_groups(self, link: Link, keys: Sequence[str]) -> None:
        """Create the consumer group on each band stream (and the stream if need be), starting at
        id 0 so that messages already there are delivered; existing groups are left alone."""
        replies = link.pipeline([("XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM") for key in keys])
        for reply in replies:
            if isinstance(reply, Exception) and not str(reply).startswith("BUSYGROUP"):
                raise BrokerError(f"XGROUP CREATE failed: {reply}")

    def _fetch_once(
        self, link: Link, queues: Sequence[str], consumer: str, count: int, want_tails: bool = True
    ) -> tuple[list[Delivery], list[str]]:
        deliveries: list[Delivery] = []
        all_tails: list[str] = []
        for queue in queues:
            remaining = count - len(deliveries)
            if remaining <= 0:
                break
            bands = Keys.bands(queue)
            entries, tails = link.call(
                "EVAL", script("fetch"), len(bands), *bands, GROUP, consumer, remaining, int(want_tails)
            )
            all_tails.extend(_text(t) for t in tails)
            for i in range(0, len(entries), 4):
                stream = bands[int(entries[i]) - 1]
                deliveries.append(
                    Delivery(
                        stream=stream,
                        entry_id=_text(entries[i + 1]),
                        body=entries[i + 2],
                        deliveries=int(entries[i + 3]),
                        queue=queue,
                        priority=PRIORITY_MAX - (int(entries[i]) - 1),
                    )
                )
        return deliveries, all_tails

    @staticmethod
    def _ack_commands(acks: Sequence[Delivery]) -> list[tuple[Any, ...]]:
        by_stream: dict[str, list[str]] = defaultdict(list)
        for delivery in acks:
            by_stream[delivery.stream].append(delivery.entry_id)
        commands: list[tuple[Any, ...]] = []
        for stream, ids in by_stream.items():
            commands.append(("XACK", stream, GROUP, *ids))
            commands.append(("XDEL", stream, *ids))
        return commands

    def flush(
        self,
        link: Link,
        acks: Sequence[Delivery],
        results: Sequence[tuple[str, bytes]],
        result_ttl_ms: int,
        delayed: Sequence[tuple[Message, bytes]] = (),
        events: Sequence[bytes] = (),
        dead: Sequence[tuple[Delivery, str, str]] = (),
    ) -> None:
        """Write results and delayed (retry) messages, then ack, atomically (MULTI), one round trip.

        Late acks ride with their results and retries, so a task is never acked without its
        result, and a retried task is neither lost nor duplicated.
        """
        commands: list[tuple[Any, ...]] = []
        for message, body in delayed:
            commands.append(
                (
                    "ZADD",
                    Keys.delayed(message.queue),
                    int((message.eta or 0) * 1000),
                    b"%d|%s" % (message.priority, body),
                )
            )
        if results:
            keys = [Keys.result(task_id) for task_id, _ in results]
            commands.append(
                (
                    "EVAL",
                    script("store_results"),
                    len(keys),
                    *keys,
                    result_ttl_ms,
                    *(payload for _, payload in results),
                )
            )
        commands.extend(self._ack_commands(acks))
        commands.extend(("XADD", Keys.EVENTS, "MAXLEN", "~", EVENTS_MAX, "*", "e", event) for event in events)
        commands.extend(
            self._dead_letter_command(delivery, reason, consumer) for delivery, reason, consumer in dead
        )
        if len(commands) == 1:
            link.call(*commands[0])  # one command (one script, XADD or ZADD) is atomic by itself
        elif commands:
            link.transaction(commands)

    def start_batch(
        self, link: Link, early: Sequence[Delivery], task_ids: Sequence[str], retry: bool = False
    ) -> tuple[list[bool], list[bool]]:
        """Before a batch starts, in one round trip (``start.lua``): early-ack ``early`` and look
        up which of ``task_ids`` are revoked.

        Returns (per early delivery: does this consumer still hold it; per task id: revoked?).
        A False in the first list means another worker recovered the message (this worker's
        heartbeat had lapsed): the caller must not run it, or the task would run twice.
        """
        keys = [d.stream for d in early] + [Keys.revoked(task_id) for task_id in task_ids]
        if not keys:
            return [], []
        flags = _text(
            link.call(
                "EVAL",
                script("start"),
                len(keys),
                *keys,
                GROUP,
                len(early),
                *(d.entry_id for d in early),
                "retry" if retry else "first",
            )
        )
        return [f == "1" for f in flags[: len(early)]], [f == "1" for f in flags[len(early) :]]

    def ack_to_start(self, link: Link, deliveries: Sequence[Delivery]) -> list[bool]:
        """Early-ack a batch; see ``start_batch``."""
        return self.start_batch(link, deliveries, ())[0]

    def revoke(self, task_ids: Sequence[str], ttl_s: float, terminate: bool = False) -> None:
        """Mark tasks revoked for ``ttl_s``: any worker, also one started later, skips them.
        With ``terminate`` the value is ``terminate``: a running one in a child process is killed."""
        with self.guard():
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.set(Keys.revoked(task_id), "terminate" if terminate else "1", px=int(ttl_s * 1000))
            pipe.execute()

    def to_terminate(self, link: Link, task_ids: Sequence[str]) -> list[str]:
        """Which of these running tasks were revoked with ``terminate=True``."""
        replies = link.pipeline([("GET", Keys.revoked(task_id)) for task_id in task_ids])
        return [task_id for task_id, value in zip(task_ids, replies, strict=True) if value == b"terminate"]

    def requeue(self, link: Link, deliveries: Sequence[Delivery]) -> int:
        """Return reserved-but-unstarted messages to their streams at once (graceful stop)."""
        return self.requeue_entries(link, [(d.stream, d.entry_id) for d in deliveries])

    def requeue_entries(self, link: Link, entries: Sequence[tuple[str, str]]) -> int:
        """Return (stream, entry id) pairs of this consumer to their streams, atomically each."""
        by_stream: dict[str, list[str]] = defaultdict(list)
        for stream, entry_id in entries:
            by_stream[stream].append(entry_id)
        commands = [("EVAL", script("requeue"), 1, stream, GROUP, *ids) for stream, ids in by_stream.items()]
        replies = link.pipeline(commands) if commands else []
        return sum(int(r) for r in replies if not isinstance(r, Exception))

    def nack(self, link: Link, deliveries: Sequence[Delivery], max_deliveries: int, consumer: str) -> int:
        """Requeue messages whose process died mid-task (delivery count + 1), or dead-letter them
        at ``max_deliveries``; returns how many were dead-lettered."""
        by_stream: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_stream[delivery.stream].append(delivery)
        commands = [
            (
                "EVAL",
                script("nack"),
                3,
                stream,
                Keys.dead(items[0].queue),
                Keys.dead_dropped(items[0].queue),
                GROUP,
                max_deliveries,
                self.dead_letter_max,
                int(now() * 1000),
                consumer,
                *(d.entry_id for d in items),
            )
            for stream, items in by_stream.items()
        ]
        replies = link.pipeline(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise BrokerError(f"nack failed: {reply}")
        return sum(int(reply[1]) for reply in replies)

    def own_pending(self, link: Link, queues: Sequence[str], consumer: str) -> list[tuple[str, str]]:
        """(stream, entry id) of every message the broker thinks ``consumer`` holds unacked.

        Used after a connection error: a fetch whose reply was lost leaves entries in this live
        consumer's pending list that it never saw; they are found here and requeued.
        """
        streams = [key for queue in queues for key in Keys.bands(queue)]
        exists = link.pipeline([("EXISTS", key) for key in streams])
        live = [key for key, found in zip(streams, exists, strict=True) if found == 1]
        replies = link.pipeline([("XPENDING", key, GROUP, "-", "+", 100_000, consumer) for key in live])
        return [
            (key, _text(item[0]))
            for key, reply in zip(live, replies, strict=True)
            if not isinstance(reply, Exception)
            for item in reply
        ]

    def _dead_letter_command(self, delivery: Delivery, reason: str, consumer: str) -> tuple[Any, ...]:
        """One EVAL of dead.lua: append with reason, time, worker and source stream; cap; count drops."""
        return (
            "EVAL",
            script("dead"),
            2,
            Keys.dead(delivery.queue),
            Keys.dead_dropped(delivery.queue),
            self.dead_letter_max,
            "m",
            delivery.body,
            "reason",
            reason,
            "time",
            int(now() * 1000),
            "worker",
            consumer,
            "stream",
            delivery.stream,
        )

    def dead_letter(self, link: Link, delivery: Delivery, reason: str, consumer: str) -> None:
        """Move one message to its queue's dead-letter stream with the reason; ack the original."""
        link.transaction(
            [self._dead_letter_command(delivery, reason, consumer), *self._ack_commands([delivery])]
        )

    def heartbeat(self, link: Link, consumer: str, info: bytes, ttl_ms: int, queues: Sequence[str]) -> bool:
        """Refresh the worker's heartbeat; returns False if it had expired (others may have
        recovered this worker's messages)."""
        replies = link.pipeline(
            [
                ("SET", Keys.worker(consumer), info, "PX", ttl_ms, "GET"),
                ("SADD", Keys.WORKERS, consumer),
                ("SADD", Keys.QUEUES, *queues),
            ]
        )
        return replies[0] is not None

    def unregister(self, link: Link, consumer: str) -> None:
        """A clean exit: drop the heartbeat so status stops listing the worker."""
        link.pipeline([("DEL", Keys.worker(consumer)), ("SREM", Keys.WORKERS, consumer)])

    def recover(
        self, link: Link, queues: Sequence[str], own_consumer: str, max_deliveries: int
    ) -> tuple[int, int]:
        """Requeue (or dead-letter) the unacked messages of consumers whose heartbeat is gone.

        Returns (requeued, dead-lettered). Safe to run from many workers at once: the Lua
        script re-checks the heartbeat and acks each entry it moves.
        """
        streams = [key for queue in queues for key in Keys.bands(queue)]
        exists = link.pipeline([("EXISTS", key) for key in streams])
        live = [key for key, found in zip(streams, exists, strict=True) if found == 1]
        if not live:
            return 0, 0
        infos = link.pipeline([("XINFO", "CONSUMERS", key, GROUP) for key in live])
        candidates: list[tuple[str, str]] = []
        for key, info in zip(live, infos, strict=True):
            if isinstance(info, Exception):
                continue  # no group yet
            for consumer in info:
                fields = (
                    consumer
                    if isinstance(consumer, dict)
                    else dict(zip(consumer[::2], consumer[1::2], strict=True))
                )
                name = _text(fields[b"name"])
                if name != own_consumer:
                    candidates.append((key, name))
        if not candidates:
            return 0, 0
        beats = link.pipeline([("EXISTS", Keys.worker(name)) for _, name in candidates])
        requeued = dead = 0
        for (key, name), beat in zip(candidates, beats, strict=True):
            if beat == 1:
                continue
            queue, _ = parse_stream_key(key)
            left = 1
            while left > 0:
                moved, lettered, left = link.call(
                    "EVAL",
                    script("recover"),
                    4,
                    key,
                    Keys.dead(queue),
                    Keys.worker(name),
                    Keys.dead_dropped(queue),
                    GROUP,
                    name,
                    max_deliveries,
                    self.dead_letter_max,
                    int(now() * 1000),
                    500,
                )
                requeued += int(moved)
                dead += int(lettered)
            link.call("SREM", Keys.WORKERS, name)
        return requeued, dead

    def move_due(self, link: Link, queues: Sequence[str]) -> float | None:
        """Move due delayed messages into their streams; returns seconds until the next one is due."""
        commands = []
        for queue in queues:
            bands = [Keys.stream(queue, p) for p in range(PRIORITY_MIN, PRIORITY_MAX + 1)]
            commands.append(("EVAL", script("schedule"), 1 + len(bands), Keys.delayed(queue), *bands, 1000))
        soonest: float | None = None
        for reply in link.pipeline(commands):
            if isinstance(reply, Exception):
                raise BrokerError(f"schedule failed: {reply}")
            moved, next_due, server_ms = (int(x) for x in reply)
            if moved >= 1000:
                return 0.0
            if next_due >= 0:
                wait = max(0.0, (next_due - server_ms) / 1000)
                soonest = wait if soonest is None else min(soonest, wait)
        return soonest
