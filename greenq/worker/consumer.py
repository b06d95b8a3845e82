"""Consumer: the loop between Redis and a pool. The only layer that knows both.

Four threads (greenlets once gevent has patched ``threading``), each with its own Redis link:

* fetcher: keeps reserved + running <= prefetch_multiplier x concurrency, one round trip per batch;
* dispatcher: hands reserved messages to free pool slots, early-acking each batch in one round
  trip *before* the bodies start (a started task is never run again);
* on completion (in the pool's thread): results, late acks and retries go to the flusher's inbox,
  without a lock (a deque) and without waking anyone when the flusher is already awake;
* flusher: writes results in one MULTI per round — natural batching, since completions pile up
  while a flush is in flight — and then frees the finished tasks' places (prefetch and start);
* maintenance: heartbeat, moving due delayed messages, recovering dead workers' messages.

Imports: app, broker (protocol types and errors), message, pools.base, worker.execute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from greenq.broker import Delivery
from greenq.exceptions import BrokerError, BrokerUnavailable, DecodeError
from greenq.message import Message, decode, encode, now, verify
from greenq.pools.base import Job, Outcome, Pool
from greenq.results import FAILURE, RETRY, REVOKED, STARTED, result_payload
from greenq.routing import route_task
from greenq.worker.lanes import Lanes, Reserved
from greenq.worker.stats import Backoff, Stats

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.task import Task

logger = logging.getLogger(__name__)


class Consumer:
    """Moves messages from the broker through a pool and back, under the delivery contract
    of docs/semantics.md. ``start()`` returns once the worker is registered; ``stop()`` is
    graceful; ``abort()`` leaves unacked messages for recovery."""

    def __init__(
        self,
        app: GreenQ,
        pool: Pool,
        cpu_pool: Pool | None = None,
        *,
        queues: Sequence[str],
        name: str,
        prefetch_multiplier: int,
        extra_info: dict[str, Any] | None = None,
        block_ms: int = 500,
    ) -> None:
        self.app = app
        self.conf = app.conf
        self.broker = app.broker
        self.pool = pool
        self.lanes = Lanes(pool, cpu_pool)
        self.queues = list(queues)
        self.name = name
        self.consumer_id = f"{name}:{os.getpid()}:{secrets.token_hex(3)}"
        self.capacity = max(1, prefetch_multiplier * self.lanes.concurrency)
        self.refetch_at = max(1, self.capacity // 4)
        self.block_ms = block_ms
        self.extra_info = extra_info or {}
        self.stats = Stats()
        self.task_counts = self.stats.task_counts
        self.runtimes = self.stats.runtimes
        self.send_events = self.conf.worker_send_task_events
        self.log = logging.LoggerAdapter(logger, {"worker": self.consumer_id})
        self.signing_keys = [
            k for k in [self.conf.message_signing_key, *(self.conf.message_signing_old_keys or [])] if k
        ]
        self.result_ttl_ms = int(self.conf.result_expires * 1000)
        # NOTE: a plain Lock, not the default RLock, which gevent makes a Python-level lock
        # (nothing here takes it twice).
        self._cond = threading.Condition(threading.Lock())
        self._held = 0
        self._running: dict[int, Reserved] = {}
        # (stream, entry id) of every message this worker holds unacked; anything else the
        # broker lists in this consumer's pending entries is an orphan (see _sweep_orphans).
        self._owned: set[tuple[str, str]] = set()
        self._next_key = 0
        # Finished work for the flusher: (result, late ack, retry, prefetch slots to free).
        # deque.append and popleft are atomic, so the hot path takes no lock.
        self._flush_inbox: deque[FlushItem] = deque()
        self._flush_wake = threading.Event()
        self._flush_lock = threading.Lock()  # for the rarer lists below
        self._flush_nacks: list[Delivery] = []
        self._flush_events: list[bytes] = []
        self._flush_dead: list[tuple[Delivery, str, str]] = []
        self._stopping = threading.Event()
        self._flusher_done = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Register (first heartbeat), then start the loops. Raises BrokerUnavailable if Redis
        cannot be reached at all at start."""
        self._maintenance_link = self.broker.connect("maintenance")
        self._heartbeat(self._maintenance_link)
        for lane_pool in self.lanes.pools.values():
            lane_pool.start()
        for target in (self._fetch_loop, self._dispatch_loop, self._flush_loop, self._maintenance_loop):
            thread = threading.Thread(target=self._guarded, args=(target,), name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guarded(self, loop: Callable[[], None]) -> None:
        """Run a loop; a bug in one round is logged and the loop restarts, never silently dies."""
        while True:
            try:
                loop()
                return
            except Exception:
                self.log.exception("%s crashed; restarting it", loop.__name__)
                self._stopping.wait(1.0)

    def stop(self, timeout_s: float, force: threading.Event | None = None) -> bool:
        """Graceful stop: stop fetching, return reserved messages at once, wait for running tasks
        up to ``timeout_s``, flush results and acks, unregister. True if nothing was left running."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        fetcher, dispatcher = self._threads[0], self._threads[1]
        fetcher.join(self.block_ms / 1000 + 5)
        dispatcher.join(5)
        with self._cond:
            returned = self.lanes.drain()
            self._held -= len(returned)
        link = self.broker.connect("shutdown")
        if returned:
            self._requeue_with_retry(link, [r.delivery for r in returned])
            self._disown([r.delivery for r in returned])
        running = self.lanes.running()
        self.log.info(
            "returned %s reserved; waiting for %s running (up to %ss)",
            f"{len(returned):,}",
            f"{running:,}",
            timeout_s,
        )
        finished = self._wait_pool(timeout_s, force)
        self._flush_wake.set()
        self._flusher_done.wait(timeout_s + 10)
        # Unregister even if tasks are still running: this process is about to exit, and
        # other workers should recover its late-acked messages now, not after the timeout.
        self._unregister(link)
        link.close()
        self.log.info(
            "stopped: %s processed, %s failed", f"{self.stats.processed:,}", f"{self.stats.failed:,}"
        )
        return finished

    def _wait_pool(self, timeout_s: float, force: threading.Event | None) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.lanes.stop(min(0.5, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline or (force is not None and force.is_set()):
                self.log.warning(
                    "%s tasks still running at shutdown; left for recovery", self.lanes.running()
                )
                return False

    def _requeue_with_retry(self, link: Any, deliveries: list[Delivery]) -> None:
        for _ in range(20):
            try:
                self.broker.requeue(link, deliveries)
                return
            except BrokerUnavailable as exc:
                self.log.warning("requeue failed (%s); retrying", exc)
                time.sleep(0.5)
        self.log.error(
            "could not return %s reserved messages; they will be recovered after worker_lost_timeout",
            len(deliveries),
        )

    def _unregister(self, link: Any) -> None:
        with contextlib.suppress(BrokerUnavailable):
            self.broker.unregister(link, self.consumer_id)

    # ---- fetch -----------------------------------------------------------------------

    def _free(self) -> int:
        return self.capacity - self._held

    def _fetch_loop(self) -> None:
        link = self.broker.connect("fetch", self.block_ms / 1000)
        backoff = Backoff(self.log, "fetch", self.stats)
        needs_sweep = False
        drained = False  # the last reserve saw every band empty: the next may block at once
        while not self._stopping.is_set():
            if needs_sweep:
                try:
                    self._sweep_orphans(link)
                    needs_sweep = False
                except (BrokerUnavailable, BrokerError) as exc:
                    backoff.failed(exc, self._stopping)
                    continue
            with self._cond:
                while not self._stopping.is_set() and not (
                    self._free() >= self.refetch_at or (self._free() > 0 and not self.lanes.reserved())
                ):
                    # Messages may pile up meanwhile: the next reserve must take them in
                    # priority order (fetch.lua), not as a blocking read would hand them out.
                    drained = False
                    self._cond.wait(1.0)
                count = self._free()
            if self._stopping.is_set():
                break
            try:
                deliveries, drained = self.broker.reserve(
                    link, self.queues, self.consumer_id, count, self.block_ms, drained
                )
                backoff.ok()
            except (BrokerUnavailable, BrokerError) as exc:
                needs_sweep = True  # the fetch may have reserved messages whose reply was lost
                drained = False
                backoff.failed(exc, self._stopping)
                continue
            if deliveries:
                self._admit_all(link, deliveries)
                # Let the dispatcher take them now: under gevent a notified waiter only runs
                # once this greenlet yields, and its next round trip would not yield at once.
                time.sleep(0)

    def _sweep_orphans(self, link: Any) -> None:
        """Requeue entries reserved for this consumer that it does not hold (lost fetch replies)."""
        pending = self.broker.own_pending(link, self.queues, self.consumer_id)
        with self._cond:
            orphans = [entry for entry in pending if entry not in self._owned]
        if orphans:
            moved = self.broker.requeue_entries(link, orphans)
            self.log.warning("returned %s messages reserved by a fetch whose reply was lost", moved)

    def _admit_all(self, link: Any, deliveries: list[Delivery]) -> None:
        accepted = []
        for delivery in deliveries:
            reserved = self._admit(link, delivery)
            if reserved is not None:
                accepted.append(reserved)
        with self._cond:
            self._held += len(accepted)
            for reserved in accepted:
                self.lanes.ready[reserved.lane].append(reserved)
            self._owned.update((r.delivery.stream, r.delivery.entry_id) for r in accepted)
            self._cond.notify_all()
        if self.send_events:
            for reserved in accepted:
                self._event("received", reserved.message, deliveries=reserved.delivery.deliveries)

    def _admit(self, link: Any, delivery: Delivery) -> Reserved | None:
        """Decode and check one delivery; dead-letter what cannot run, revoke what expired."""
        if self.signing_keys and not verify(delivery.body, self.signing_keys):
            return self._reject(link, delivery, "signature missing or invalid")
        try:
            message = decode(delivery.body)
        except DecodeError as exc:
            return self._reject(link, delivery, f"malformed message: {exc}")
        task = self.app.tasks.get(message.task)
        if task is None:
            return self._reject(link, delivery, f"unknown task {message.task!r}")
        acks_late = task.options.acks_late if task.options.acks_late is not None else self.conf.task_acks_late
        lane = "cpu" if "cpu" in self.lanes.pools and self._wants_child(task, message) else "main"
        return Reserved(delivery, message, task, acks_late, lane)

    def _reject(self, link: Any, delivery: Delivery, reason: str) -> None:
        try:
            self.broker.dead_letter(link, delivery, reason, self.consumer_id)
        except BrokerUnavailable as exc:
            self.log.warning("could not dead-letter %s (%s); it will be recovered", delivery.entry_id, exc)
            return None
        self.stats.dead_lettered += 1
        self.log.error("dead-lettering message %s from %s: %s", delivery.entry_id, delivery.queue, reason)
        return None

    # ---- dispatch --------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        link = self.broker.connect("dispatch")
        backoff = Backoff(self.log, "ack", self.stats)
        lost_reply = False  # the last start_batch may have acked without us seeing the reply
        while True:
            with self._cond:
                while not self._stopping.is_set() and not self.lanes.can_dispatch(self._startable()):
                    self._cond.wait(1.0)
                if self._stopping.is_set():
                    return
                batch = self.lanes.take(self._startable())
            batch = self._drop_expired(batch)
            early = [r for r in batch if not r.acks_late]
            try:
                still_ours, revoked = self.broker.start_batch(
                    link, [r.delivery for r in early], [r.message.id for r in batch], retry=lost_reply
                )
                backoff.ok()
                lost_reply = False
            except (BrokerUnavailable, BrokerError) as exc:
                lost_reply = True
                with self._cond:
                    self.lanes.put_back(batch)
                backoff.failed(exc, self._stopping)
                continue
            self._disown([r.delivery for r in early])
            batch = self._drop_recovered(batch, early, still_ours)
            batch = self._drop_revoked(batch, revoked)
            for reserved in batch:
                self._track_started(reserved)
                self._submit(reserved)

    def _startable(self) -> int:
        """How many more tasks may start: a finished task keeps its place until its outcome is
        written, so a SIGKILL can never lose the outcomes of more than ``concurrency`` tasks
        (running, or finished with the result still in this process). Call under ``_cond``."""
        return self.lanes.concurrency - (self._held - self.lanes.reserved())

    def _drop_recovered(
        self, batch: list[Reserved], early: list[Reserved], still_ours: list[bool]
    ) -> list[Reserved]:
        """Skip messages another worker recovered while this one's heartbeat had lapsed: they
        were acked by nobody here, and running them would run them twice."""
        lost = {id(r) for r, ours in zip(early, still_ours, strict=True) if not ours}
        if not lost:
            return batch
        self.log.error(
            "%s reserved messages were recovered by other workers (this worker's heartbeat "
            "had lapsed; was the hub blocked?); not running them here",
            len(lost),
        )
        self._release(len(lost))
        return [r for r in batch if id(r) not in lost]

    def _drop_revoked(self, batch: list[Reserved], revoked: list[bool]) -> list[Reserved]:
        keep = []
        for reserved, is_revoked in zip(batch, revoked, strict=False):
            if not is_revoked:
                keep.append(reserved)
                continue
            self._skip(reserved, "revoked")
        return keep

    def _skip(self, reserved: Reserved, reason: str) -> None:
        """Record REVOKED for a message that will not run; late-ack ones are acked with it."""
        message = reserved.message
        self.stats.revoked += 1
        if self.send_events:
            self._event("revoked", message, reason=reason)
        self.log.info("task %s[%s] %s before it started; not running it", message.task, message.id, reason)
        payload = result_payload(
            message.id,
            message.task,
            REVOKED,
            exc_type="TaskRevoked",
            exc_message=reason,
            retries=message.retries,
            worker=self.consumer_id,
        )
        if reserved.acks_late:
            self._queue_flush(result=(message.id, payload), ack=reserved.delivery)
        else:
            self._queue_flush(result=(message.id, payload), release=1)

    def _drop_expired(self, batch: list[Reserved]) -> list[Reserved]:
        """A task whose ``expires`` passed before it could start does not run: REVOKED."""
        clock = now()
        keep = []
        for reserved in batch:
            message = reserved.message
            if message.expires is None or message.expires >= clock:
                keep.append(reserved)
                continue
            self.stats.revoked += 1
            self.log.info("task %s[%s] expired before it started; revoked", message.task, message.id)
            payload = result_payload(
                message.id,
                message.task,
                REVOKED,
                exc_type="TaskRevoked",
                exc_message="expired",
                retries=message.retries,
                worker=self.consumer_id,
            )
            self._queue_flush(result=(message.id, payload), ack=reserved.delivery)
        return keep

    def _track_started(self, reserved: Reserved) -> None:
        option = reserved.task.options.track_started
        if option if option is not None else self.conf.task_track_started:
            message = reserved.message
            payload = result_payload(
                message.id, message.task, STARTED, retries=message.retries, worker=self.consumer_id
            )
            self._queue_flush(result=(message.id, payload))

    def _submit(self, reserved: Reserved) -> None:
        message = reserved.message
        options = reserved.task.options
        self._next_key += 1
        key = self._next_key
        self._running[key] = reserved
        reserved.started = time.time()
        if self.send_events:
            self._event("started", message)
        job = Job(
            key=key,
            task=message.task,
            args=list(message.args),
            kwargs=message.kwargs,
            request={
                "id": message.id,
                "task": message.task,
                "args": message.args,
                "kwargs": message.kwargs,
                "retries": message.retries,
                "deliveries": reserved.delivery.deliveries,
                "eta": message.eta,
                "expires": message.expires,
                "queue": message.queue,
                "priority": message.priority,
                "worker": self.consumer_id,
            },
            time_limit=options.time_limit if options.time_limit is not None else self.conf.task_time_limit,
            soft_time_limit=(
                options.soft_time_limit
                if options.soft_time_limit is not None
                else self.conf.task_soft_time_limit
            ),
            started=time.time(),
        )
        self.lanes.pools[reserved.lane].submit(job, self._on_done)

    # ---- completion and flush --------------------------------------------------------

    def _on_done(self, job: Job, outcome: Outcome) -> None:
        try:
            self._finish(self._running[job.key], outcome)
        finally:
            # Only once its results are handed to the flusher: a stopping flusher that sees
            # nothing running and an empty inbox has everything.
            del self._running[job.key]

    def _finish(self, reserved: Reserved, outcome: Outcome) -> None:
        message = reserved.message
        stats = self.stats
        stats.processed += 1
        stats.record(message.task, outcome.state, outcome.runtime_s)
        if self.send_events:
            kind = {RETRY: "retried", FAILURE: "failed"}.get(outcome.state, "succeeded")
            self._event(kind, message, runtime_s=round(outcome.runtime_s, 6), error=outcome.error)
        delayed = None
        if outcome.state == RETRY:
            stats.retried += 1
            retry = message.with_changes(
                id=message.id, retries=message.retries + 1, eta=now() + (outcome.retry_in_s or 0.0)
            )
            delayed = (retry, encode(retry, None, self.conf.message_signing_key))
            self.log.info(
                "task %s[%s] retry %s in %.2fs: %s",
                message.task,
                message.id,
                retry.retries,
                outcome.retry_in_s or 0.0,
                outcome.error,
            )
        elif outcome.state == FAILURE:
            stats.failed += 1
            self.log.warning("task %s[%s] failed: %s", message.task, message.id, outcome.error)
            if reserved.task.options.dead_letter_on_failure:
                stats.dead_lettered += 1
                with self._flush_lock:
                    self._flush_dead.append((reserved.delivery, f"failed: {outcome.error}", self.consumer_id))
        elif outcome.state == REVOKED:
            stats.revoked += 1
        else:
            stats.succeeded += 1
        if outcome.lost and reserved.acks_late:
            # The process running it died: at-least-once means it runs again (counted toward
            # max_deliveries), not FAILURE.
            self.log.warning("task %s[%s] lost with its process; requeued", message.task, message.id)
            with self._flush_lock:
                self._flush_nacks.append(reserved.delivery)
            self._flush_wake.set()
            return
        result = (message.id, outcome.payload) if outcome.payload is not None else None
        if reserved.acks_late:  # a late-acked message is held until its ack is flushed
            self._queue_flush(result=result, ack=reserved.delivery, delayed=delayed)
        else:
            self._queue_flush(result=result, delayed=delayed, release=1)

    def _event(self, kind: str, message: Message, **fields: Any) -> None:
        """Queue a task event for the capped events stream (``worker_send_task_events``)."""
        record = {
            "event": kind,
            "id": message.id,
            "task": message.task,
            "queue": message.queue,
            "worker": self.consumer_id,
            "time": time.time(),
            **{k: v for k, v in fields.items() if v is not None},
        }
        with self._flush_lock:
            self._flush_events.append(orjson.dumps(record, default=str))
        self._flush_wake.set()

    def held(self) -> int:
        return self._held

    def _disown(self, deliveries: Sequence[Delivery]) -> None:
        with self._cond:
            self._owned.difference_update((d.stream, d.entry_id) for d in deliveries)

    def _release(self, count: int) -> None:
        with self._cond:
            self._held -= count
            self._cond.notify_all()

    def _queue_flush(
        self,
        result: tuple[str, bytes] | None = None,
        ack: Delivery | None = None,
        delayed: tuple[Message, bytes] | None = None,
        release: int = 0,
    ) -> None:
        """Hand finished work to the flusher; ``release`` prefetch slots are freed by it."""
        self._flush_inbox.append((result, ack, delayed, release))
        if not self._flush_wake.is_set():
            self._flush_wake.set()

    def _flush_loop(self) -> None:
        link = self.broker.connect("flush")
        backoff = Backoff(self.log, "flush", self.stats)
        work = FlushWork()  # what is still to write, kept across a failed round
        while True:
            self._flush_wake.clear()  # before taking the work: a later hand-off wakes us again
            self._take_flush_work(work)
            if work.empty():
                self._release_written(work)  # finished tasks with nothing to write
                if self._stopping.is_set() and self.lanes.running() == 0 and not self._running:
                    self._take_flush_work(work)  # one last look
                    if work.empty():
                        self._release_written(work)
                        self._flusher_done.set()
                        return
                    continue
                self._flush_wake.wait(0.5)
                continue
            try:
                if work.nacks:
                    self.stats.dead_lettered += self.broker.nack(
                        link, work.nacks, self.conf.max_deliveries, self.consumer_id
                    )
                    self._disown(work.nacks)
                    self._release(len(work.nacks))
                    work.nacks = []
                self.broker.flush(
                    link,
                    work.acks,
                    work.results,
                    self.result_ttl_ms,
                    delayed=work.delayed,
                    events=work.events,
                    dead=work.dead,
                )
                backoff.ok()
                written, work = work, FlushWork()
                if written.acks:
                    self._disown(written.acks)
                written.released += len(written.acks)
                self._release_written(written)
            except (BrokerUnavailable, BrokerError) as exc:
                backoff.failed(exc, threading.Event())

    def _release_written(self, work: FlushWork) -> None:
        """Free the places of finished tasks whose outcomes are written (see ``_startable``)."""
        if work.released:
            self._release(work.released)
            work.released = 0

    def _take_flush_work(self, work: FlushWork) -> None:
        """Move handed-off work into ``work``."""
        inbox = self._flush_inbox
        while inbox:
            result, ack, delayed, release = inbox.popleft()
            if result is not None:
                work.results.append(result)
            if ack is not None:
                work.acks.append(ack)
            if delayed is not None:
                work.delayed.append(delayed)
            work.released += release
        if self._flush_nacks or self._flush_events or self._flush_dead:
            with self._flush_lock:
                work.nacks += self._flush_nacks
                work.events += self._flush_events
                work.dead += self._flush_dead
                self._flush_nacks, self._flush_events, self._flush_dead = [], [], []

    # ---- maintenance -----------------------------------------------------------------

    def info(self) -> bytes:
        """The heartbeat record: who this worker is and what it is doing."""
        stats = self.stats
        return orjson.dumps(
            {
                "consumer": self.consumer_id,
                "name": self.name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "prefetch_capacity": self.capacity,
                "held": self._held,
                "reserved": self.lanes.reserved(),
                "running": self.lanes.running(),
                "processed": stats.processed,
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "retried": stats.retried,
                "revoked": stats.revoked,
                "dead_lettered": stats.dead_lettered,
                "recovered": stats.recovered,
                "reconnects": stats.reconnects,
                "started_at": stats.started_at,
                "heartbeat_at": time.time(),
                "active": [
                    {"id": r.message.id, "task": r.message.task, "started": r.started, "args": r.message.args}
                    for r in list(self._running.values())[:100]
                ],
                "tasks": sorted(self.app.tasks),
                **self.lanes.stats(),
                **self.extra_info,
            }
        )

    def _heartbeat(self, link: Any) -> None:
        ttl_ms = int(self.conf.worker_lost_timeout * 1000)
        fresh = self.broker.heartbeat(link, self.consumer_id, self.info(), ttl_ms, self.queues)
        if not fresh and self.stats.processed:
            self.log.error(
                "heartbeat had expired: this worker was presumed dead and its unacked "
                "messages may have been recovered by others (was the hub blocked?)"
            )

    def _maintenance_loop(self) -> None:
        link = self._maintenance_link
        backoff = Backoff(self.log, "maintenance", self.stats)
        beat_every = max(0.2, self.conf.worker_lost_timeout / 4)
        recover_every = max(0.2, min(1.0, self.conf.worker_lost_timeout / 4))
        next_beat = time.monotonic() + beat_every
        next_recover = time.monotonic()
        while not self._stopping.is_set():
            try:
                soonest = self.broker.move_due(link, self.queues)
                clock = time.monotonic()
                if clock >= next_beat:
                    self._heartbeat(link)
                    next_beat = clock + beat_every
                if clock >= next_recover:
                    self._recover(link)
                    next_recover = clock + recover_every
                self._terminate_revoked(link)
                backoff.ok()
            except (BrokerUnavailable, BrokerError) as exc:
                backoff.failed(exc, self._stopping)
                continue
            tick = 0.1 if soonest is None else min(0.1, soonest)
            self._stopping.wait(tick)

    def _terminate_revoked(self, link: Any) -> None:
        """Kill prefork children running tasks revoked with terminate=True."""
        for pool in self.lanes.pools.values():
            running = getattr(pool, "running_keys", None)
            keys = running() if running else {}
            if not keys:
                continue
            doomed = set(self.broker.to_terminate(link, list(keys.values())))
            for key, task_id in keys.items():
                if task_id in doomed and pool.terminate(key):  # type: ignore[attr-defined]
                    self.log.warning("terminating task %s: revoked with terminate=True", task_id)

    def _recover(self, link: Any) -> None:
        requeued, dead = self.broker.recover(link, self.queues, self.consumer_id, self.conf.max_deliveries)
        if requeued or dead:
            self.stats.recovered += requeued
            self.log.warning("recovered %s messages of dead workers, dead-lettered %s", requeued, dead)

    def _wants_child(self, task: Task, message: Message) -> bool:
        """``cpu=True`` tasks, and tasks routed with ``{"pool": "prefork"}``, go to child processes."""
        if task.options.cpu:
            return True
        if self.conf.task_routes is None:
            return False
        route = route_task(
            message.task, routes=self.conf.task_routes, args=message.args, kwargs=message.kwargs
        )
        return route.pool == "prefork"


FlushItem = tuple[tuple[str, bytes] | None, Delivery | None, tuple[Message, bytes] | None, int]


@dataclass(slots=True)
class FlushWork:
    """One flush round's writes."""

    results: list[tuple[str, bytes]] = field(default_factory=list)
    acks: list[Delivery] = field(default_factory=list)
    delayed: list[tuple[Message, bytes]] = field(default_factory=list)
    nacks: list[Delivery] = field(default_factory=list)
    events: list[bytes] = field(default_factory=list)
    dead: list[tuple[Delivery, str, str]] = field(default_factory=list)
    released: int = 0  # places of finished tasks to free once this round is written

    def empty(self) -> bool:
        return not (self.results or self.acks or self.delayed or self.nacks or self.events or self.dead)
