"""Flusher: writes what finished tasks leave behind, in batches, and then frees their places.

Completions arrive from the pool's threads or greenlets through a deque (``append`` and
``popleft`` are atomic, so the hot path takes no lock) and wake the flusher only when it
sleeps. Each round writes everything that piled up while the last round was in flight — results,
late acks, retries, events, dead letters, freed unique keys — in one ``MULTI`` (``Channel.flush``): natural
batching. Only then are the finished tasks' places released (see ``Ledger.startable``), and
``after_task_publish`` sent for the new tasks the round wrote (retries, workflow steps, the
bodies of the chords it ended).
Imports: broker (Delivery, Channel, Keys), exceptions, message, signals, worker.ledger, worker.stats.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from greenq import signals
from greenq.broker import Delivery
from greenq.broker.channel import Channel
from greenq.broker.keys import Keys
from greenq.exceptions import BrokerError, BrokerUnavailable, DecodeError
from greenq.message import Message, decode
from greenq.worker.ledger import Ledger
from greenq.worker.stats import Backoff, Stats

# (result, late ack, retry, places to free once written, workflow follow-ups)
FlushItem = tuple[tuple[str, bytes] | None, Delivery | None, tuple[Message, bytes] | None, int, Any]
# the bodies of dead-lettered messages -> (task id, FAILURE record) to store for each
DeadResults = Callable[[list[bytes], str], list[tuple[str, bytes]]]
NACK_DEAD_REASON = "its delivery killed the worker max_deliveries times"


@dataclass(slots=True)
class FlushWork:
    """One flush round's writes."""

    results: list[tuple[str, bytes]] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    delayed: list[tuple[Message, bytes]] = field(default_factory=list)
    nacks: list[Delivery] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)
    dead: list[tuple[Delivery, str, str]] = field(default_factory=list)
    unique: list[tuple[str, str]] = field(default_factory=list)  # (unique key, task id) to free
    follow_ups: list[tuple[Any, ...]] = field(default_factory=list)  # workflow commands
    chords: list[Any] = field(default_factory=list)  # finished chord members (ChordCount)
    published: list[tuple[Message, bytes]] = field(default_factory=list)  # new tasks in follow_ups
    released: int = 0  # places of finished tasks to free once this round is written
    token: str = ""  # this round's marker (Keys.flushed), given when it is first written

    def empty(self) -> bool:
        return not (
            self.results
            or self.acks
            or self.delayed
            or self.nacks
            or self.events
            or self.dead
            or self.unique
            or self.follow_ups
            or self.chords
        )


class Flusher:
    """The inbox of finished work and the loop that writes it (``run``, in its own thread)."""

    def __init__(
        self,
        ledger: Ledger,
        stats: Stats,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        consumer_id: str,
        result_ttl_ms: int,
        max_deliveries: int,
        dead_results: DeadResults,
        keys: type[Keys] = Keys,
    ) -> None:
        self.keys = keys  # the app's keyspace (its key_prefix)
        self.ledger = ledger
        self.stats = stats
        self.log = log
        self.consumer_id = consumer_id
        self.result_ttl_ms = result_ttl_ms
        self.max_deliveries = max_deliveries
        self.dead_results = dead_results
        self.inbox: deque[FlushItem] = deque()
        self.wake = threading.Event()
        self.done = threading.Event()
        # Rarer hand-offs: lists swapped out under this lock by the flusher.
        self._lock = threading.Lock()
        self._nacks: list[Delivery] = []
        self._events: list[bytes] = []
        self._dead: list[tuple[Delivery, str, str]] = []
        self._unique: list[tuple[str, str]] = []
        # A token unique to this process's rounds: a worker restarted under the same name must
        # not mistake the marker its predecessor left for one of its own rounds.
        self._rounds = (f"{os.getpid()}.{time.time_ns()}.{n}" for n in itertools.count(1))

    # ---- hand-offs (any thread) --------------------------------------------------------

    def put(
        self,
        result: tuple[str, bytes] | None = None,
        ack: Delivery | None = None,
        delayed: tuple[Message, bytes] | None = None,
        release: int = 0,
        follow: Any = None,
    ) -> None:
        """Hand finished work over; ``release`` places are freed once it is written; ``follow``:
        a workflow task's ``FollowUp`` (written in the same round)."""
        self.inbox.append((result, ack, delayed, release, follow))
        if not self.wake.is_set():
            self.wake.set()

    def nack(self, delivery: Delivery) -> None:
        """A late-ack message whose process died: back to its queue (or dead-lettered)."""
        with self._lock:
            self._nacks.append(delivery)
        self.wake.set()

    def event(self, record: bytes) -> None:
        with self._lock:
            self._events.append(record)
        self.wake.set()

    def task_event(self, kind: str, message: Message, **fields: Any) -> None:
        """A task event for the capped events stream (``worker_send_task_events``)."""
        record = {
            "event": kind,
            "id": message.id,
            "task": message.task,
            "queue": message.queue,
            "worker": self.consumer_id,
            "time": time.time(),
            **{k: v for k, v in fields.items() if v is not None},
        }
        self.event(orjson.dumps(record, default=str))

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._dead.append((delivery, reason, self.consumer_id))
        self.wake.set()

    def release_unique(self, message: Message) -> None:
        """A unique task finished for good (not RETRY): free its key, if it still holds it, in
        the next round (after or with its result)."""
        with self._lock:
            self._unique.append((self.keys.unique(message.queue, message.unique or ""), message.id))
        self.wake.set()

    def take(self, work: FlushWork) -> None:
        """Move handed-off work into ``work``."""
        inbox = self.inbox
        while inbox:
            result, ack, delayed, release, follow = inbox.popleft()
            if follow is not None:
                work.follow_ups += follow.commands
                if follow.messages and signals.after_task_publish.receivers:
                    work.published += follow.messages
                if follow.chord is not None:
                    work.chords.append(follow.chord)
            if result is not None:
                work.results.append(result)
            if ack is not None:
                work.acks.append(ack)
            if delayed is not None:
                work.delayed.append(delayed)
            work.released += release
        if self._nacks or self._events or self._dead or self._unique:
            with self._lock:
                work.nacks += self._nacks
                work.events += self._events
                work.dead += self._dead
                work.unique += self._unique
                self._nacks, self._events, self._dead, self._unique = [], [], [], []

    # ---- the loop ----------------------------------------------------------------------

    def run(self, channel: Channel, stopping: threading.Event, idle: Callable[[], bool]) -> None:
        """Write rounds until ``stopping`` is set and ``idle()`` says nothing can still finish;
        then take one last look and set ``done``."""
        backoff = Backoff(self.log, "flush", self.stats)
        work = FlushWork()
        lost: FlushWork | None = None  # a round whose reply was lost: it may have landed
        while True:
            if lost is not None:
                try:
                    self._write(channel, lost, again=True)
                    lost = None
                    backoff.ok()
                except (BrokerUnavailable, BrokerError) as exc:
                    backoff.failed(exc, threading.Event())
                    continue
            self.wake.clear()  # before taking the work: a later hand-off wakes us again
            self.take(work)
            if work.empty():
                self._release(work)  # finished tasks with nothing to write
                if stopping.is_set() and idle():
                    self.take(work)  # one last look
                    if work.empty():
                        self._release(work)
                        self.done.set()
                        return
                    continue
                self.wake.wait(0.5)
                continue
            try:
                self._write(channel, work)
                backoff.ok()
            except (BrokerUnavailable, BrokerError) as exc:
                lost = work
                backoff.failed(exc, threading.Event())
            work = FlushWork()

    def _write(self, channel: Channel, work: FlushWork, again: bool = False) -> None:
        """Write one round; ``again``: its first attempt's reply was lost (see ``Channel.flush``)."""
        if work.nacks:
            dead = channel.nack(work.nacks, self.max_deliveries, self.consumer_id)
            self.stats.dead_lettered += len(dead)
            work.results += self.dead_results(dead, NACK_DEAD_REASON)
            self.ledger.disown(work.nacks)
            self.ledger.release(len(work.nacks))
            work.nacks = []
        round_: dict[str, Any] = {
            "acks": work.acks,
            "results": work.results,
            "result_ttl_ms": self.result_ttl_ms,
            "delayed": work.delayed,
            "events": work.events,
            "dead": work.dead,
            "unique": work.unique,
            "follow_ups": work.follow_ups,
            "chords": work.chords,
        }
        # Dead letters and follow-ups (XADDs) must not land twice; the rest is idempotent.
        marker = None
        if work.dead or work.follow_ups:
            work.token = work.token or next(self._rounds)
            marker = (self.keys.flushed(self.consumer_id), work.token)
        fired: list[str] = []  # chords whose body this round enqueued (unknown if a reply was lost)
        if again and marker is not None:
            channel.flush_unless_landed(marker, **round_)
        else:
            fired = channel.flush(**round_, marker=marker)
        if work.acks:
            self.ledger.disown(work.acks)
        work.released += len(work.acks)
        self._release(work)
        if (work.delayed or work.published or fired) and signals.after_task_publish.receivers:
            self._published(channel, work, fired)

    def _published(self, channel: Channel, work: FlushWork, fired: list[str]) -> None:
        """``after_task_publish`` for the new tasks a written round holds, in this thread (as a
        producer's, in the sending thread). A chord's body was built by its producer and kept in
        the chord's state: it is read back (a round trip, only then)."""
        bodies: list[tuple[Message, bytes]] = []
        try:
            bodies = [(decode(body), body) for body in channel.chord_bodies(fired)] if fired else []
        except (BrokerUnavailable, BrokerError, DecodeError) as exc:
            self.log.warning("after_task_publish: could not read a chord's body: %s", exc)
        signals.published([*work.delayed, *work.published, *bodies])

    def _release(self, work: FlushWork) -> None:
        """Free the places of finished tasks whose outcomes are written."""
        if work.released:
            self.ledger.release(work.released)
            work.released = 0
