"""Channel: one worker thread's own connection and every round trip it makes for messages.

Reserve (prefetch), start (early ack + revocation check), flush (results, late acks, retries,
events, dead letters in one ``MULTI``), nack, requeue and dead-letter. Each call is one round
trip, or one per queue where a script must stay inside one queue's hash slot. Liveness
(heartbeats, recovery, the due-ETA mover) is ``recovery.Upkeep``. Imports: broker (Delivery),
broker.keys, broker.stack, exceptions, message; never the worker or pools.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from greenq import shards
from greenq.broker import Delivery, group_deliveries
from greenq.broker.keys import EVENTS_MAX, FLUSH_MARKER_TTL_MS, GROUP, Keys, delayed_command
from greenq.broker.probes import Probes
from greenq.broker.stack import Link, script, text
from greenq.broker.wake import BLOCK_ALL_MAX, QueueWatch
from greenq.exceptions import BrokerError
from greenq.limits import Check, LeaseWork, gate_args, release_args
from greenq.message import PRIORITY_MAX, Message, now


class Channel:
    """A worker thread's message operations on its own ``Link`` (not shared between threads)."""

    def __init__(
        self,
        link: Link,
        dead_letter_max: int,
        shards: Mapping[str, int] | None = None,
        keys: type[Keys] = Keys,
    ) -> None:
        self.link = link
        self.dead_letter_max = dead_letter_max
        self.keys = keys  # the app's keyspace (its key_prefix)
        self.shards = shards or {}  # queue_shards: a queue is read with its shards (greenq.shards)
        self._turn = 0  # which shard a fetch starts at
        # Which queues were left empty, at which tails: where XREAD BLOCK waits (wake.py).
        self.watch = QueueWatch(link, self.keys.bands, self.create_groups)
        # (queues, consumer, per band, block ms) -> the packed XREADGROUP BLOCK and its bands
        self._blocking_read: tuple[Any, list[bytes], dict[str, tuple[str, int]]] = (None, [], {})
        self._flow_keys: tuple[list[str], list[str]] = ([], [])  # flow_upkeep's queues, their flow hashes

    def close(self) -> None:
        self.link.close()

    # ---- reserve ---------------------------------------------------------------------

    def reserve(
        self, queues: Sequence[str], consumer: str, count: int, block_ms: int, drained: bool = False
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
        leaves the bands empty, so a drained call goes straight to the XREAD as well. On several
        queues, ``fetch.lua`` runs only on those that may hold messages, and past
        ``BLOCK_ALL_MAX`` bands the worker always waits that way (``wake.QueueWatch``: a blocking
        read on every band costs Redis more the more bands it names).
        """
        order = queues
        if self.shards:  # each fetch starts at the next shard (the blocking read names them all)
            queues = shards.expand(queues, self.shards)
            self._turn += 1
            order = shards.rotate(queues, self._turn)
        bands = len(queues) * len(self.keys.bands(queues[0]))
        per_band = count // bands
        fetch = partial(self._fetch_queue, consumer)
        if per_band < 1 or bands > BLOCK_ALL_MAX or (self.link.cluster and len(queues) > 1):
            return self.watch.reserve(order, count, block_ms, drained, fetch, consumer)
        if drained and block_ms > 0:
            return self._reserve_blocking(queues, consumer, per_band, block_ms)
        if len(queues) > 1:
            deliveries, _ = self.watch.reserve(order, count, 0, False, fetch)
        else:
            deliveries, _ = self._fetch_queue(consumer, queues[0], count, want_tails=False)
        if deliveries or block_ms <= 0:
            return deliveries, len(deliveries) < count
        return self._reserve_blocking(queues, consumer, per_band, block_ms)

    def _reserve_blocking(
        self, queues: Sequence[str], consumer: str, per_band: int, block_ms: int
    ) -> tuple[list[Delivery], bool]:
        """One XREADGROUP BLOCK on every band: returns at once what is there, else waits."""
        # The same command, packed once, call after call while the worker idles.
        key = (tuple(queues), consumer, per_band, block_ms)
        cached = self._blocking_read
        if cached[0] != key:
            keys = [k for queue in queues for k in self.keys.bands(queue)]
            command = ("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", per_band, "BLOCK", max(1, block_ms))
            packed = self.link.pack([(*command, "STREAMS", *keys, *[">"] * len(keys))])
            bands = {k: (q, PRIORITY_MAX - i) for q in queues for i, k in enumerate(self.keys.bands(q))}
            cached = self._blocking_read = (key, packed, bands)
        _, packed, bands = cached
        reply = self.link.send(packed, 1)[0]
        if isinstance(reply, Exception):
            # NOGROUP: a band or its group does not exist (yet, or any more: deleted while this
            # read waited); Redis 7 answers UNBLOCKED when a stream is deleted under the read.
            if not str(reply).startswith(("NOGROUP", "UNBLOCKED")):
                raise BrokerError(f"XREADGROUP failed: {reply}")
            self.create_groups(list(bands))
            return [], False
        if not reply:
            return [], True
        return group_deliveries(reply, bands, per_band)

    def create_groups(self, keys: Sequence[str]) -> None:
        """Create the consumer group on each band stream (and the stream if need be), starting at
        id 0 so that messages already there are delivered; existing groups are left alone."""
        replies = self.link.pipeline([("XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM") for key in keys])
        for reply in replies:
            if isinstance(reply, Exception) and not str(reply).startswith("BUSYGROUP"):
                raise BrokerError(f"XGROUP CREATE failed: {reply}")

    def _fetch_queue(
        self, consumer: str, queue: str, count: int, want_tails: bool = True
    ) -> tuple[list[Delivery], list[bytes] | None]:
        """One EVAL of fetch.lua: (deliveries, the bands' tails if it left them empty, else None)."""
        bands = self.keys.bands(queue)
        entries, tails = self.link.call(
            "EVAL", script("fetch"), len(bands), *bands, GROUP, consumer, count, int(want_tails)
        )
        deliveries = [
            Delivery(  # stream, entry_id, body, deliveries, queue, priority
                bands[int(entries[i]) - 1],
                text(entries[i + 1]),
                entries[i + 2],
                int(entries[i + 3]),
                queue,
                PRIORITY_MAX - (int(entries[i]) - 1),
            )
            for i in range(0, len(entries), 4)
        ]
        return deliveries, (list(tails) or None)

    # ---- flow control (docs/flow-control.md) ---------------------------------------------

    def gate(self, queue: str, items: Sequence[tuple[Delivery, str, Check]], lease_ttl_ms: int) -> str:
        """Pass reserved messages of one queue through their limits (``gate.lua``), one round
        trip. One letter per (delivery, task id, check): ``a`` admitted; ``d`` deferred and ``p``
        parked have left the stream and are no longer this consumer's."""
        args = gate_args(self.keys, GROUP, queue, items, lease_ttl_ms)
        return text(self.link.call("EVAL", script("gate"), *args))

    def flow_upkeep(
        self,
        controls: Sequence[str],
        sweeps: Sequence[str],
        leases: Mapping[str, Mapping[str, LeaseWork]],
        lease_ttl_ms: int,
    ) -> tuple[list[dict[str, str]], list[list[str]]]:
        """One round trip: the runtime controls of the ``controls`` queues, the lease names with
        parked messages of the ``sweeps`` queues, and one ``release.lua`` per queue of ``leases``
        (queue -> lease name -> what to release and extend)."""
        scripted = bool(controls) and not self.link.cluster  # flows.lua: one reply for them all
        if scripted and self._flow_keys[0] != controls:
            self._flow_keys = (list(controls), [self.keys.flow(q) for q in controls])
        commands: list[tuple[Any, ...]] = (
            [("EVAL", script("flows"), len(controls), *self._flow_keys[1])]
            if scripted
            else [("HGETALL", self.keys.flow(q)) for q in controls]
        )
        read = len(commands)  # replies of the controls
        commands += [("SMEMBERS", self.keys.parked_names(q)) for q in sweeps]
        commands += [
            ("EVAL", script("release"), *release_args(self.keys, q, work, lease_ttl_ms))
            for q, work in leases.items()
        ]
        replies = self.link.pipeline(commands) if commands else []
        failed = [reply for reply in replies if isinstance(reply, Exception)]
        if failed:
            raise BrokerError(f"flow-control upkeep failed: {failed[0]}")
        flows = (
            Probes.flow_fields(len(controls), replies[0])
            if scripted
            else [{text(k): text(v) for k, v in zip(r[::2], r[1::2], strict=True)} for r in replies[:read]]
        )
        parked = [[text(n) for n in r] for r in replies[read : read + len(sweeps)]]
        return flows, parked

    # ---- start -----------------------------------------------------------------------

    def start_batch(
        self,
        early: Sequence[Delivery],
        task_ids: Sequence[str],
        retry: bool = False,
        late: Sequence[Delivery] = (),
    ) -> tuple[list[bool], list[bool]]:
        """Before a batch starts, in one round trip (``start.lua``): early-ack ``early``, check
        that ``late`` (late-ack) are still pending here, and look up which of ``task_ids`` are
        revoked.

        Returns (per early, then per late delivery: does this consumer still hold it; per task
        id: revoked?). A False in the first list means another worker recovered the message
        (this worker's heartbeat had lapsed): the caller must not run it, or it would run twice.
        """
        # NOTE: list comprehensions, not generators: a generator resumes a frame per item, and
        # this runs for every task; a queue's ``recovered`` key is built once per batch.
        recovered = {queue: self.keys.recovered(queue) for queue in {d.queue for d in early}}
        revoked = self.keys.revoked
        keys = [
            *[d.stream for d in early],
            *[recovered[d.queue] for d in early],
            *[d.stream for d in late],
            *[revoked(task_id) for task_id in task_ids],
        ]
        if not keys:
            return [], []
        flags = text(
            self.link.call(
                "EVAL",
                script("start"),
                len(keys),
                *keys,
                GROUP,
                len(early),
                *[d.entry_id for d in early],
                "retry" if retry else "first",
                len(late),
                *[d.entry_id for d in late],
            )
        )
        held = len(early) + len(late)
        return [f == "1" for f in flags[:held]], [f == "1" for f in flags[held:]]

    # ---- outcomes --------------------------------------------------------------------

    def flush(
        self,
        acks: Sequence[Delivery],
        results: Sequence[tuple[str, bytes]],
        result_ttl_ms: int,
        delayed: Sequence[tuple[Message, bytes]] = (),
        events: Sequence[bytes] = (),
        dead: Sequence[tuple[Delivery, str, str]] = (),
        unique: Sequence[tuple[str, str]] = (),
        follow_ups: Sequence[tuple[Any, ...]] = (),
        chords: Sequence[Any] = (),
        marker: tuple[str, str] | None = None,
    ) -> list[str]:
        """Write results and delayed (retry) messages, then ack, atomically (MULTI), one round trip.
        ``unique``: (unique key, task id) of finished unique tasks, each key deleted if that task
        still holds it (``unique_release.lua``). ``follow_ups``: workflow commands (a chain's
        next step, callbacks); ``chords``: finished chord members (``ChordCount``), counted by
        one ``chord.lua`` per chord, which enqueues the body when the last one is in.

        Late acks ride with their results and retries, so a task is never acked without its
        result, and a retried task is neither lost nor duplicated. ``marker``: (key, token) set
        in the same MULTI, for a round with writes not safe to repeat (``flush_unless_landed``).
        Returns the state keys of the chords whose body this round enqueued (``chord.lua`` said 1).
        """
        commands: list[tuple[Any, ...]] = [
            delayed_command(message, body, self.keys) for message, body in delayed
        ]
        if results:
            commands.append(store_results_command(results, result_ttl_ms, self.keys))
        commands.extend(follow_ups)
        first_chord = len(commands)
        chord_commands = _chord_commands(chords, result_ttl_ms) if chords else []
        commands.extend(chord_commands)
        commands.extend(_ack_commands(acks))
        commands.extend(
            ("XADD", self.keys.EVENTS, "MAXLEN", "~", EVENTS_MAX, "*", "e", event) for event in events
        )
        commands.extend(
            self._dead_letter_command(delivery, reason, consumer) for delivery, reason, consumer in dead
        )
        commands.extend(("EVAL", script("unique_release"), 1, key, task_id) for key, task_id in unique)
        if marker is not None:
            commands.append(("SET", marker[0], marker[1], "PX", FLUSH_MARKER_TTL_MS))
        if len(commands) == 1:
            replies = [self.link.call(*commands[0])]  # one command (script, XADD, ZADD) is atomic by itself
        elif commands:
            replies = self.link.transaction(commands)
        else:
            return []
        fired = replies[first_chord : first_chord + len(chord_commands)]
        return [command[3] for command, reply in zip(chord_commands, fired, strict=True) if reply == 1]

    def chord_bodies(self, keys: Sequence[str]) -> list[bytes]:
        """The body messages kept in these chords' states (what ``chord.lua`` enqueued), in one
        round trip; a state already gone is left out."""
        replies = self.link.pipeline([("HGET", key, "body") for key in keys])
        return [reply for reply in replies if isinstance(reply, bytes)]

    def flush_unless_landed(self, marker: tuple[str, str], **round_: Any) -> bool:
        """Write again a round whose reply was lost unless it landed (its marker holds its token):
        its dead letters and follow-ups must not land twice. WATCHed: a late copy of the first
        attempt landing meanwhile aborts the EXEC (BrokerError: ask again). True if written now.
        A cluster (one MULTI per slot: no single marker can tell) writes it again."""
        if not self.link.cluster:
            self.link.call("WATCH", marker[0])
            if self.link.call("GET", marker[0]) == marker[1].encode():
                self.link.call("UNWATCH")
                return False
        self.flush(**round_, marker=marker)
        return True

    def requeue(self, deliveries: Sequence[Delivery]) -> int:
        """Return reserved-but-unstarted messages to their streams at once (graceful stop)."""
        return self.requeue_entries([(d.stream, d.entry_id) for d in deliveries])

    def requeue_entries(self, entries: Sequence[tuple[str, str]]) -> int:
        """Return (stream, entry id) pairs of this consumer to their streams, atomically each."""
        by_stream: dict[str, list[str]] = defaultdict(list)
        for stream, entry_id in entries:
            by_stream[stream].append(entry_id)
        commands = [("EVAL", script("requeue"), 1, stream, GROUP, *ids) for stream, ids in by_stream.items()]
        replies = self.link.pipeline(commands) if commands else []
        return sum(int(r) for r in replies if not isinstance(r, Exception))

    def nack(self, deliveries: Sequence[Delivery], max_deliveries: int, consumer: str) -> list[bytes]:
        """Requeue messages whose process died mid-task (delivery count + 1), or dead-letter them
        at ``max_deliveries``; returns the bodies of those dead-lettered."""
        by_stream: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_stream[delivery.stream].append(delivery)
        commands = [
            (
                "EVAL",
                script("nack"),
                3,
                stream,
                self.keys.dead(items[0].queue),
                self.keys.dead_dropped(items[0].queue),
                GROUP,
                max_deliveries,
                self.dead_letter_max,
                int(now() * 1000),
                consumer,
                *(d.entry_id for d in items),
            )
            for stream, items in by_stream.items()
        ]
        replies = self.link.pipeline(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise BrokerError(f"nack failed: {reply}")
        return [body for reply in replies for body in reply[1]]

    def own_pending(self, queues: Sequence[str], consumer: str) -> list[tuple[str, str]]:
        """(stream, entry id) of every message the broker thinks ``consumer`` holds unacked.

        Used after a connection error: a fetch whose reply was lost leaves entries in this live
        consumer's pending list that it never saw; they are found here and requeued.
        """
        streams = [key for queue in shards.expand(queues, self.shards) for key in self.keys.bands(queue)]
        exists = self.link.pipeline([("EXISTS", key) for key in streams])
        live = [key for key, found in zip(streams, exists, strict=True) if found == 1]
        replies = self.link.pipeline([("XPENDING", key, GROUP, "-", "+", 100_000, consumer) for key in live])
        return [
            (key, text(item[0]))
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
            self.keys.dead(delivery.queue),
            self.keys.dead_dropped(delivery.queue),
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

    def dead_letter(
        self, delivery: Delivery, reason: str, consumer: str, result: tuple[str, bytes, int] | None = None
    ) -> None:
        """Move one message to its queue's dead-letter stream with the reason and ack the original,
        atomically, if this consumer still holds it (``reject.lua``: a worker presumed dead must
        not dead-letter what recovery gave another); ``result`` = (task id, payload, ttl ms) also
        stores the task's final state, so a caller waiting on it learns why instead of waiting
        for ever."""
        fields = self._dead_letter_command(delivery, reason, consumer)[6:]  # dead.lua's ARGV[2..]
        keys = (delivery.stream, self.keys.dead(delivery.queue), self.keys.dead_dropped(delivery.queue))
        reject = ("EVAL", script("reject"), 3, *keys, GROUP, delivery.entry_id, self.dead_letter_max, *fields)
        commands: list[tuple[Any, ...]] = [reject]
        if result is not None:
            task_id, payload, ttl_ms = result
            commands.append(store_results_command([(task_id, payload)], ttl_ms, self.keys))
        self.link.transaction(commands)


def store_results_command(
    results: Sequence[tuple[str, bytes]], ttl_ms: int, keyspace: type[Keys] = Keys
) -> tuple[Any, ...]:
    """One EVAL of store_results.lua: each (task id, record) to its result stream, with the TTL."""
    keys = [keyspace.result(task_id) for task_id, _ in results]
    return ("EVAL", script("store_results"), len(keys), *keys, ttl_ms, *[payload for _, payload in results])


def _chord_commands(chords: Sequence[Any], ttl_ms: int) -> list[tuple[Any, ...]]:
    """One EVAL of chord.lua per chord, with all of its members finished in this round."""
    by_chord: dict[str, list[Any]] = defaultdict(list)
    for count in chords:
        by_chord[count.key].append(count)
    commands: list[tuple[Any, ...]] = []
    for key, counts in by_chord.items():
        members = [part for c in counts for part in (c.index, c.value, c.failure)]
        commands.append(
            ("EVAL", script("chord"), 3, key, counts[0].stream, counts[0].delayed, ttl_ms, *members)
        )
    return commands


def _ack_commands(acks: Sequence[Delivery]) -> list[tuple[Any, ...]]:
    """XACK + XDEL per stream: the stream keeps only unacked or undelivered messages."""
    by_stream: dict[str, list[str]] = defaultdict(list)
    for delivery in acks:
        by_stream[delivery.stream].append(delivery.entry_id)
    commands: list[tuple[Any, ...]] = []
    for stream, ids in by_stream.items():
        commands.append(("XACK", stream, GROUP, *ids))
        commands.append(("XDEL", stream, *ids))
    return commands
