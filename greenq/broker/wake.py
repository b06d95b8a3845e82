"""Waiting on many queues: which of a worker's queues may hold messages, and one blocking read on
the others, so that a wake-up costs the same round trips for 1 or 1,000 queues.

A blocking ``XREADGROUP`` answers with up to COUNT messages per band it names, so a worker may
wait with it only on no more bands than the messages it may still take. ``QueueWatch`` waits on
the bands of the queues left empty (past ``BLOCK_ALL_MAX``, only the bands in use):
with ``XREADGROUP COUNT 1 BLOCK`` where they are few enough (``_claim``: a wake-up reserves in
its own round trip, and a band that woke it stays in the wait, answering at once if it holds
more), else with ``XREAD BLOCK`` on their tails (the newest ids ``fetch.lua`` saw when it left
a queue empty), then ``fetch.lua`` only on the queues whose streams woke it (one round trip,
not one per queue). A refill while busy first asks one non-blocking ``XREAD`` which of the
empty queues got messages since. Both commands are packed once per set of waited bands, the
``XREAD`` from per-queue pieces kept between calls (only a woken queue's tails change), so
packing does not grow with the number of queues either. Imports: broker (Delivery), broker.keys,
broker.stack, message; never the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from greenq.broker import Delivery, group_deliveries
from greenq.broker.keys import GROUP
from greenq.broker.stack import Link
from greenq.exceptions import BrokerError
from greenq.message import PRIORITY_MAX

# fetch(queue, remaining) -> (reserved deliveries, the queue's band tails if fetch.lua left it empty)
Fetch = Callable[[str, int], tuple[list[Delivery], list[bytes] | None]]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(words: Sequence[bytes], keys: bytes, ids: bytes, streams: int) -> list[bytes]:
    head = b"*%d\r\n" % (len(words) + 2 * streams) + b"".join(_bulk(w) for w in words)
    return [head + keys + ids]


NONE = b"0-0"  # the tail fetch.lua reports for a band stream with no entry (or none at all)
BLOCK_ALL_MAX = 100  # up to this many band streams, wait on them all (a few queues: cheap)
CLUSTER_POLL_MS = 50  # on Redis Cluster, how long a wait on several queues blocks on one of them


class QueueWatch:
    """One worker thread's view of which of its queues were left empty, and at which tails.

    Past ``BLOCK_ALL_MAX`` band streams, the blocking read waits only on the default priority's
    band and on the others that have had a message (tail past ``0-0``): most queues never use
    most of their ten bands, and Redis's cost of a blocking read grows with its keys. The other
    bands are asked without blocking by every refill and after every wait that timed out, so the
    first message ever sent at a new priority of an idle worker's queue is picked up within one
    ``block_ms`` (0.5 s) instead of at once. An idle worker (its waits time out one after the
    other) asks them in the round trip of its next wait, after the blocking read (Redis runs a
    blocked client's next command once the read ends): one round trip per ``block_ms``, as on
    one queue.
    """

    def __init__(
        self,
        link: Link,
        bands: Callable[[str], Sequence[str]],
        create_groups: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.link = link
        self._bands = bands  # queue -> its band streams, in fetch.lua's order
        self._create_groups = create_groups  # makes band streams with their group (XREADGROUP waits)
        self._grouped: set[str] = set()  # band streams known to exist with the group
        self._band_of: dict[str, tuple[str, int]] = {}  # band stream -> (queue, priority)
        self._waited: dict[str, tuple[list[str], list[str]]] = {}  # queue -> (all, used) band names
        self._group_read: tuple[Any, list[bytes]] = (None, [])  # the packed XREADGROUP wait
        self._queues: tuple[str, ...] = ()
        self._empty: dict[str, list[bytes]] = {}  # queue -> its bands' tails when left empty
        self._keys: dict[str, list[bytes]] = {}  # queue -> its band keys, packed one by one
        self._owner: dict[bytes, str] = {}  # band stream -> queue
        # queue -> (packed keys, packed tails, how many), of all its bands / of those used so far
        self._all: dict[str, tuple[bytes, bytes, int]] = {}
        self._used: dict[str, tuple[bytes, bytes, int]] = {}
        self._timed_out = False  # the last wait timed out: ask the unused bands next time
        self._looked = False  # ... and it asked them itself as it ended (an idle worker's waits)
        self._turn = 0  # on a cluster, which queue a wait on several blocks on

    def _use(self, queues: Sequence[str]) -> None:
        if tuple(queues) == self._queues:
            return
        self._queues = tuple(queues)
        self._empty = {q: t for q, t in self._empty.items() if q in queues}
        for queue in queues:
            if queue not in self._keys:
                names = list(self._bands(queue))
                bands = [b.encode() for b in names]
                self._keys[queue] = [_bulk(b) for b in bands]
                self._owner.update((b, queue) for b in bands)
                self._band_of.update((b, (queue, PRIORITY_MAX - i)) for i, b in enumerate(names))

    def _left_empty(self, queue: str, tails: list[bytes]) -> None:
        self._empty[queue] = tails
        keys = self._keys[queue]
        self._all[queue] = (b"".join(keys), b"".join(_bulk(t) for t in tails), len(tails))
        last = len(tails) - 1  # priority 0, the default: fetch.lua reads the bands highest first
        used = [i for i, tail in enumerate(tails) if tail != NONE or i == last]
        self._used[queue] = (
            b"".join(keys[i] for i in used),
            b"".join(_bulk(tails[i]) for i in used),
            len(used),
        )
        names = list(self._bands(queue))
        self._waited[queue] = (names, [names[i] for i in used])
        self._grouped.update(name for name, tail in zip(names, tails, strict=True) if tail != NONE)

    def reserve(
        self,
        queues: Sequence[str],
        count: int,
        block_ms: int,
        drained: bool,
        fetch: Fetch,
        consumer: str | None = None,
    ) -> tuple[list[Delivery], bool]:
        """Reserve up to ``count`` messages of ``queues`` (in their order); with ``block_ms``,
        wait that long for one if there are none. ``drained`` (the caller's last call saw every
        queue empty) goes straight to the wait. Returns (deliveries, every queue left empty).
        With ``consumer``, a wait on no more bands than ``count`` reserves as it wakes
        (``_claim``)."""
        self._use(queues)
        idle = drained and block_ms > 0 and len(self._empty) == len(queues)
        timed_out, self._timed_out = self._timed_out, False
        if not idle or (timed_out and (self.link.cluster or not self._looked)):
            deliveries = self._pass(queues, count, fetch, probe=True)
            if deliveries or block_ms <= 0:
                return deliveries, len(deliveries) < count
        words = (b"XREAD", b"COUNT", b"1", b"BLOCK", b"%d" % max(1, block_ms), b"STREAMS")
        every = sum(self._all[q][2] for q in queues)
        used = sum(self._used[q][2] for q in queues)
        pieces = self._used if every > BLOCK_ALL_MAX and used else self._all
        # An idle worker looks at the bands its waits leave out as each wait ends, in its round trip.
        look = timed_out and not self.link.cluster and pieces is self._used
        if consumer is not None and not self.link.cluster and self._create_groups is not None:
            waited = [b for q in queues if q in self._empty for b in self._waited[q][pieces is self._used]]
            if len(waited) <= count:
                claimed = self._claim(queues, waited, consumer, block_ms, look)
                if claimed is not None:
                    if claimed[0] or not claimed[1]:  # reserved, or timed out with nothing seen
                        if not claimed[0]:
                            self._timed_out, self._looked = pieces is self._used, look
                        return claimed[0], True
                    return self._finish(queues, count, fetch)  # the look found new bands
        if not self._woken(queues, words, pieces, look):
            # The tails still hold; bands left out of the wait are asked next time (or were).
            self._timed_out, self._looked = pieces is self._used, look
            return [], True
        return self._finish(queues, count, fetch)

    def _finish(self, queues: Sequence[str], count: int, fetch: Fetch) -> tuple[list[Delivery], bool]:
        deliveries = self._pass(queues, count, fetch, probe=False)
        return deliveries, len(deliveries) < count

    def _claim(
        self, queues: Sequence[str], waited: list[str], consumer: str, block_ms: int, look: bool
    ) -> tuple[list[Delivery], bool] | None:
        """Wait with ``XREADGROUP COUNT 1 BLOCK`` on the ``waited`` bands, so that a wake-up
        reserves in the same round trip instead of needing a ``fetch.lua`` after an ``XREAD``
        (it answers with at most one message per band: the caller waits so only on no more bands
        than it may reserve messages). Returns (deliveries, whether ``look`` found messages in
        bands left out), or None when a band or its group is gone (the next call makes them)."""
        missing = [b for b in waited if b not in self._grouped]
        if missing:  # a queue's priority 0 band, waited on before it ever had a message
            self._create_groups(missing)  # type: ignore[misc]
            self._grouped.update(missing)
        key = (tuple(waited), consumer, block_ms)
        if self._group_read[0] != key:
            read = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", 1, "BLOCK", max(1, block_ms), "STREAMS")
            packed = self.link.pack([(*read, *waited, *[">"] * len(waited))])
            self._group_read = (key, packed)
        packed = self._group_read[1]
        if look:  # runs once the blocking read ends: Redis holds a blocked client's next command
            packed = [packed[0] + self._read(queues, (b"XREAD", b"COUNT", b"1", b"STREAMS"), self._all)[0]]
        replies = self.link.send(packed, 1 + look)
        if isinstance(replies[0], Exception):
            # NOGROUP: deleted under the wait (Redis 7 says UNBLOCKED); made again next time.
            if not str(replies[0]).startswith(("NOGROUP", "UNBLOCKED")):
                raise BrokerError(f"XREADGROUP failed: {replies[0]}")
            self._grouped.difference_update(waited)
            return None
        # A band that woke it stays in the wait: if it holds more, the next wait (">": entries
        # never delivered) answers at once, and an XREAD on its old tail too.
        deliveries, _ = group_deliveries(replies[0] or (), self._band_of, 1)
        found = False
        for reply in replies[1:]:
            if isinstance(reply, Exception):
                raise BrokerError(f"XREAD failed: {reply}")
            for stream, _ in reply or ():
                self._empty.pop(self._owner[stream], None)
                found = True
        return deliveries, found

    def _woken(
        self, queues: Sequence[str], words: Sequence[bytes], pieces: dict[str, Any], look: bool = False
    ) -> bool:
        """Send ``XREAD`` on the tails (``pieces``) of the empty ``queues``; those with newer
        entries are no longer empty. True if any woke. With ``look``, a non-blocking ``XREAD``
        on all their bands follows in the same round trip, run by Redis as the first ends."""
        if self.link.cluster:
            return self._woken_cluster([q for q in queues if q in self._empty], words)
        packed = self._read(queues, words, pieces)
        if look:  # runs once the blocking read ends: Redis holds a blocked client's next command
            packed = [packed[0] + self._read(queues, (b"XREAD", b"COUNT", b"1", b"STREAMS"), self._all)[0]]
        woke = False
        for reply in self.link.send(packed, 1 + look):
            if isinstance(reply, Exception):
                raise BrokerError(f"XREAD failed: {reply}")
            for stream, _ in reply or ():
                self._empty.pop(self._owner[stream], None)
            woke = woke or bool(reply)
        return woke

    def _read(self, queues: Sequence[str], words: Sequence[bytes], pieces: dict[str, Any]) -> list[bytes]:
        """The packed XREAD of ``words`` on the tails (``pieces``) of the empty ``queues``."""
        chosen = [pieces[q] for q in queues if q in self._empty]
        keys = b"".join(p[0] for p in chosen)
        ids = b"".join(p[1] for p in chosen)
        return _command(words, keys, ids, sum(p[2] for p in chosen))

    def _woken_cluster(self, queues: list[str], words: Sequence[bytes]) -> bool:
        """On Redis Cluster a command names one slot: one XREAD per queue. A wait on several
        queues looks at them all without blocking, then blocks on one of them in turn for at
        most ``CLUSTER_POLL_MS``: another queue's message waits up to that long."""
        block = int(words[4]) if b"BLOCK" in words else 0
        if len(queues) > 1 or not block:
            reads = [("XREAD", "COUNT", 1, "STREAMS", *self._bands(q), *self._empty[q]) for q in queues]
            woke = self._mark(queues, self.link.pipeline(reads))
            if woke or not block:
                return woke
            self._turn += 1
            queues = [queues[self._turn % len(queues)]]
            block = min(block, CLUSTER_POLL_MS)
        q = queues[0]
        read = ("XREAD", "COUNT", 1, "BLOCK", block, "STREAMS", *self._bands(q), *self._empty[q])
        return self._mark(queues, self.link.pipeline([read]))

    def _mark(self, queues: list[str], replies: list[Any]) -> bool:
        woke = False
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                raise BrokerError(f"XREAD failed: {reply}")
            if reply:
                self._empty.pop(queue, None)
                woke = True
        return woke

    def _pass(self, queues: Sequence[str], count: int, fetch: Fetch, probe: bool) -> list[Delivery]:
        """``fetch.lua`` on each queue not known to be empty, in order, until ``count``. With
        ``probe``, one non-blocking XREAD first finds the empty queues that got messages since
        (asked only when more than one queue is empty: for one, fetch.lua costs the same)."""
        if probe and sum(1 for q in queues if q in self._empty) > 1:
            self._woken(queues, (b"XREAD", b"COUNT", b"1", b"STREAMS"), self._all)
        elif probe:
            self._empty.clear()
        deliveries: list[Delivery] = []
        for queue in queues:
            remaining = count - len(deliveries)
            if remaining <= 0:
                break
            if queue in self._empty:
                continue
            got, tails = fetch(queue, remaining)
            deliveries.extend(got)
            if tails is not None:
                self._left_empty(queue, tails)
        return deliveries
