"""Consumer: a worker's lifecycle and the two loops that move messages into its pools.

Four threads (greenlets once gevent has patched ``threading``), each on its own connection:

* fetcher (here): keeps held <= prefetch_multiplier x concurrency, one round trip per batch,
  and admits what it reserved (``admission``) into the lanes;
* dispatcher (here): hands reserved messages to free pool slots, early-acking each batch in one
  round trip *before* the bodies start (a started task is never run again);
* flusher (``flusher``): writes results, late acks and retries in batches, then frees places;
* maintenance (``maintenance``): heartbeat, due delayed messages, recovery, terminate.

The state they share is the ``Ledger``, which says who owns each field. Completion
(``_on_done``, in the pool's thread) counts the outcome and hands it to the flusher.
Imports: broker (Delivery, Channel), exceptions, message, pools.base, worker.*; the app only as
a type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from greenq import signals
from greenq.broker import Delivery
from greenq.broker.channel import Channel
from greenq.exceptions import BrokerError, BrokerUnavailable, DecodeError
from greenq.message import FAILURE, RETRY, REVOKED, STARTED, Message, decode, now, result_payload
from greenq.pools.base import Job, Outcome, Pool
from greenq.worker.admission import Admission, Flow, Rejection, expired
from greenq.worker.execute import revoked_outcome
from greenq.worker.flusher import Flusher
from greenq.worker.lanes import Lanes, Reserved
from greenq.worker.ledger import Ledger
from greenq.worker.lifecycle import Lifecycle
from greenq.worker.maintenance import Maintenance
from greenq.worker.stats import Backoff, Stats
from greenq.worker.workflows import FollowUp, Workflows, extended, retry_message

if TYPE_CHECKING:
    from greenq.app import GreenQ

logger = logging.getLogger(__name__)
task_logger = logging.getLogger("greenq.task")


class Consumer(Lifecycle):
    """Moves messages from the broker through a pool and back, under the delivery contract of
    docs/semantics.md. ``start()`` returns once the worker is registered; ``stop()`` is
    graceful; ``abandon()`` is the hard exit (see ``Lifecycle``)."""

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
        conf = self.conf = app.conf
        self.app = app
        self.broker = app.broker
        self.lanes = Lanes(pool, cpu_pool)
        self.queues = list(queues)
        self.name = name
        self.consumer_id = f"{name}:{os.getpid()}:{secrets.token_hex(3)}"
        self.capacity = max(1, prefetch_multiplier * self.lanes.concurrency)
        self.refetch_at = max(1, self.capacity // 4)
        self.block_ms = block_ms
        self.stats = Stats()
        self.task_counts = self.stats.task_counts
        self.runtimes = self.stats.runtimes
        self.send_events = conf.worker_send_task_events
        self.log = logging.LoggerAdapter(logger, {"worker": self.consumer_id})
        self.log_tasks = conf.worker_log_tasks and task_logger.isEnabledFor(logging.INFO)
        self.result_ttl_ms = int(conf.result_expires * 1000)
        self.workflows = Workflows(app, self.result_ttl_ms, self.consumer_id, self.broker.keys)
        self.result_extended = conf.result_extended
        self.ledger = Ledger(self.lanes, self.capacity)
        keys = [k for k in [conf.message_signing_key, *(conf.message_signing_old_keys or [])] if k]
        self.admission = Admission(app.tasks, conf, keys, "cpu" in self.lanes.pools)
        self.flusher = Flusher(
            self.ledger,
            self.stats,
            self.log,
            consumer_id=self.consumer_id,
            result_ttl_ms=self.result_ttl_ms,
            max_deliveries=conf.max_deliveries,
            dead_results=self.dead_letter_results,
            keys=self.broker.keys,
        )
        self.maintenance = Maintenance(
            self.broker.upkeep(),
            self.ledger,
            self.stats,
            self.log,
            consumer_id=self.consumer_id,
            name=name,
            queues=self.queues,
            task_names=list(app.tasks),
            lost_timeout_s=conf.worker_lost_timeout,
            max_deliveries=conf.max_deliveries,
            extra_info={"send_task_events": self.send_events, **(extra_info or {})},
            on_dead_lettered=self._store_dead_results,
            flow=Flow(self.admission, self.queues, conf.worker_lost_timeout, self.log),
        )
        self._next_key = 0  # the dispatcher's only
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def loops(self) -> list[Callable[[], None]]:
        """The worker's threads, started by ``Lifecycle.start`` in this order."""
        return [
            self._fetch_loop,
            self._dispatch_loop,
            lambda: self.flusher.run(self.broker.channel(), self._stopping, self._idle),
            lambda: self.maintenance.run(self._stopping),
        ]

    def held(self) -> int:
        return self.ledger.held

    def _idle(self) -> bool:
        """Nothing is running and nothing can finish any more (the flusher may end)."""
        return self.lanes.running() == 0 and not self.ledger.running

    # ---- fetch -----------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        channel = self.broker.channel(self.block_ms / 1000)
        ledger = self.ledger
        backoff = Backoff(self.log, "fetch", self.stats)
        needs_sweep = False
        drained = False  # the last reserve saw every band empty: the next may block at once
        reserved_from = self.queues  # the queues of the last reserve (some may be paused since)
        while not self._stopping.is_set():
            if needs_sweep:
                try:
                    self._sweep_orphans(channel)
                    needs_sweep = False
                except (BrokerUnavailable, BrokerError) as exc:
                    backoff.failed(exc, self._stopping)
                    continue
            with ledger.cond:
                while not self._stopping.is_set() and not (
                    ledger.free() >= self.refetch_at or (ledger.free() > 0 and not self.lanes.reserved())
                ):
                    # Messages may pile up meanwhile: the next reserve must take them in
                    # priority order (fetch.lua), not as a blocking read would hand them out.
                    drained = False
                    ledger.cond.wait(1.0)
                count = ledger.free()
            if self._stopping.is_set():
                break
            try:
                queues = self.maintenance.flow.active(self.queues, self._stopping)  # none if all paused
                drained = drained and queues == reserved_from  # a queue paused or resumed: bands changed
                reserved_from = queues
                deliveries, drained = channel.reserve(queues, self.consumer_id, count, self.block_ms, drained)
                if deliveries:  # its flow-control gate is part of the reservation
                    self._admit_all(channel, deliveries)
                backoff.ok()
            except (BrokerUnavailable, BrokerError) as exc:
                needs_sweep = True  # the fetch may have reserved messages whose reply was lost
                drained = False
                backoff.failed(exc, self._stopping)
                continue
            if deliveries:
                # Let the dispatcher take them now: under gevent a notified waiter only runs
                # once this greenlet yields, and its next round trip would not yield at once.
                time.sleep(0)

    def _sweep_orphans(self, channel: Channel) -> None:
        """Requeue entries reserved for this consumer that it does not hold (lost fetch replies)."""
        orphans = self.ledger.orphans(channel.own_pending(self.queues, self.consumer_id))
        if orphans:
            moved = channel.requeue_entries(orphans)
            self.log.warning("returned %s messages reserved by a fetch whose reply was lost", moved)

    def _admit_all(self, channel: Channel, deliveries: list[Delivery]) -> None:
        accepted = []
        for delivery in deliveries:
            verdict = self.admission.admit(delivery)
            if isinstance(verdict, Rejection):
                self._reject(channel, delivery, verdict)
            else:
                accepted.append(verdict)
        if self.maintenance.flow.limited:  # before a place is taken: over its limit, a message takes none
            accepted = self.maintenance.flow.gate(channel, accepted, self._reject)
        self.ledger.admit(accepted)
        if self.send_events:
            for reserved in accepted:
                message = reserved.message
                self._event(
                    "received", message, deliveries=reserved.delivery.deliveries, created=message.created
                )

    def _reject(self, channel: Channel, delivery: Delivery, rejection: Rejection) -> None:
        """Dead-letter a message that cannot run, and store FAILURE naming why for its task."""
        message, reason = rejection.message, rejection.reason
        result = None
        if message is not None:
            payload = self._failure_record(message.id, message.task, "DeadLettered", reason, message.retries)
            result = (message.id, payload, self.result_ttl_ms)
        try:
            channel.dead_letter(delivery, reason, self.consumer_id, result)
        except BrokerUnavailable as exc:
            self.log.warning("could not dead-letter %s (%s); it will be recovered", delivery.entry_id, exc)
            return
        self.stats.dead_lettered += 1
        signals.task_rejected.send(sender=self, message=delivery, exc=rejection.reason)
        if message is not None and message.workflow is not None and result is not None:
            self.flusher.put(follow=self._follow_up(message, FAILURE, result[1]))
        if message is not None and message.unique is not None:
            self.flusher.release_unique(message)
        self.log.error("dead-lettering message %s from %s: %s", delivery.entry_id, delivery.queue, reason)

    def dead_letter_results(self, bodies: list[bytes], reason: str) -> list[tuple[str, bytes]]:
        """FAILURE records for dead-lettered message bodies (those that still decode)."""
        results = []
        for body in bodies:
            with contextlib.suppress(DecodeError):
                message = decode(body)
                record = self._failure_record(
                    message.id, message.task, "DeadLettered", reason, message.retries
                )
                results.append((message.id, record))
                if message.workflow is not None:  # e.g. a chord member: its chord must still end
                    self.flusher.put(follow=self._follow_up(message, FAILURE, record))
        return results

    def _store_dead_results(self, bodies: list[bytes], reason: str) -> None:
        for result in self.dead_letter_results(bodies, reason):
            self.flusher.put(result=result)

    # ---- dispatch --------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        channel = self.broker.channel()
        ledger = self.ledger
        backoff = Backoff(self.log, "ack", self.stats)
        lost_reply = False  # the last start_batch may have acked without us seeing the reply
        while True:
            with ledger.cond:
                while not self._stopping.is_set() and not self.lanes.can_dispatch(ledger.startable()):
                    ledger.cond.wait(1.0)
                if self._stopping.is_set():
                    return
                batch = self.lanes.take(ledger.startable())
            batch = self._drop_expired(batch)
            early = [r for r in batch if not r.acks_late]
            late = [r for r in batch if r.acks_late]
            try:
                still_ours, revoked = channel.start_batch(
                    [r.delivery for r in early],
                    [r.message.id for r in batch],
                    retry=lost_reply,
                    late=[r.delivery for r in late],
                )
                backoff.ok()
                lost_reply = False
            except (BrokerUnavailable, BrokerError) as exc:
                lost_reply = True
                with ledger.cond:
                    self.lanes.put_back(batch)
                backoff.failed(exc, self._stopping)
                continue
            taken = self._recovered_elsewhere(early + late, still_ours)
            ledger.disown([r.delivery for r in early + late if not r.acks_late or id(r) in taken])
            for reserved, is_revoked in zip(batch, revoked, strict=True):
                if id(reserved) in taken:
                    continue
                if is_revoked:
                    self._skip(reserved, "revoked", acked=not reserved.acks_late)
                elif reserved.message.workflow is None or "cr" not in reserved.message.workflow:
                    self._submit(reserved)
                else:  # a chord body: its header's results first
                    failed = self.workflows.prepare_body(channel.link, reserved)
                    self._finish(reserved, failed) if failed else self._submit(reserved)

    def _recovered_elsewhere(self, held: list[Reserved], still_ours: list[bool]) -> set[int]:
        """``id()``s of messages another worker recovered (our heartbeat lapsed); frees their places."""
        lost = {id(r) for r, ours in zip(held, still_ours, strict=True) if not ours}
        if lost:
            self.log.error(
                "%s reserved messages were recovered by other workers (this worker's heartbeat "
                "had lapsed; was the hub blocked?); not running them here",
                len(lost),
            )
            self.ledger.release(len(lost))
            for reserved in held:  # a concurrency lease it took is not this worker's to keep
                if id(reserved) in lost:
                    self.maintenance.flow.leases.pop(reserved.message.id, None)
        return lost

    def _drop_expired(self, batch: list[Reserved]) -> list[Reserved]:
        """A task whose ``expires`` passed before it could start does not run: REVOKED."""
        clock, keep = now(), []
        for reserved in batch:
            if expired(reserved.message, clock):
                self._skip(reserved, "expired", acked=False)
            else:
                keep.append(reserved)
        return keep

    def _skip(self, reserved: Reserved, reason: str, acked: bool) -> None:
        """Record REVOKED for a message that will not run; one not ``acked`` yet (late-ack, or
        dropped before the batch's early ack) is acked with its result."""
        message = reserved.message
        self.stats.revoked += 1
        if self.send_events:
            self._event("revoked", message, reason=reason)
        self.log.info("task %s[%s] %s before it started; not running it", message.task, message.id, reason)
        self.maintenance.flow.finished(message.id)
        outcome = revoked_outcome(
            message.id, message.task, reason, message.retries, self.consumer_id, reserved.task
        )
        follow = self._follow_up(message, REVOKED, outcome.payload)
        result = (message.id, (follow.payload if follow else outcome.payload) or b"")
        if acked:
            self.flusher.put(result=result, release=1, follow=follow)
        else:
            self.flusher.put(result=result, ack=reserved.delivery, follow=follow)
        if message.unique is not None:
            self.flusher.release_unique(message)

    def _submit(self, reserved: Reserved) -> None:
        message = reserved.message
        policy = reserved.policy or self.admission.policy(reserved.task)
        if policy.track_started:
            payload = result_payload(
                message.id, message.task, STARTED, retries=message.retries, worker=self.consumer_id
            )
            self.flusher.put(result=(message.id, payload))
        self._next_key += 1
        key = self._next_key
        self.ledger.running[key] = reserved
        reserved.started = started = time.time()
        if self.send_events:
            self._event("started", message)
        job = Job(  # positional, in the field order: every task builds one
            key,
            message.task,
            list(message.args),
            message.kwargs,
            {
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
                "headers": message.headers,
            },
            policy.time_limit,
            policy.soft_time_limit,
            started,
        )
        self.lanes.pools[reserved.lane].submit(job, self.maintenance.flow.on_done(self._on_done, message.id))

    # ---- completion ------------------------------------------------------------------

    def _on_done(self, job: Job, outcome: Outcome) -> None:
        try:
            self._finish(self.ledger.running[job.key], outcome)
        finally:
            # Only once its results are handed to the flusher: a stopping flusher that sees
            # nothing running and an empty inbox has everything.
            del self.ledger.running[job.key]

    def _finish(self, reserved: Reserved, outcome: Outcome) -> None:
        message = reserved.message
        stats = self.stats
        stats.processed += 1
        stats.record(message.task, outcome.state, outcome.runtime_s)
        if self.send_events:
            kind = {RETRY: "retried", FAILURE: "failed"}.get(outcome.state, "succeeded")
            self._event(kind, message, runtime_s=round(outcome.runtime_s, 6), error=outcome.error)
        if self.log_tasks:
            task_logger.info(
                "task %s[%s] %s in %.3fs", message.task, message.id, outcome.state, outcome.runtime_s
            )
        delayed = None
        if outcome.state == RETRY:
            stats.retried += 1
            delayed = retry_message(message, outcome.retry_in_s, self.conf.message_signing_key)
            retry = delayed[0]
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
                self.flusher.dead_letter(reserved.delivery, f"failed: {outcome.error}")
        elif outcome.state == REVOKED:
            stats.revoked += 1
        else:
            stats.succeeded += 1
        if outcome.lost and reserved.acks_late:
            # The process running it died: at-least-once means it runs again (counted toward
            # max_deliveries), not FAILURE.
            self.log.warning("task %s[%s] lost with its process; requeued", message.task, message.id)
            self.flusher.nack(reserved.delivery)
            return
        payload = outcome.payload
        if self.result_extended and payload is not None:
            payload = extended(payload, message, reserved.started or None)
        follow = None if delayed is not None else self._follow_up(message, outcome.state, payload)
        if follow is not None:
            payload = follow.payload
        result = (message.id, payload) if payload is not None else None
        if reserved.acks_late:  # a late-acked message is held until its ack is flushed
            self.flusher.put(result=result, ack=reserved.delivery, delayed=delayed, follow=follow)
        else:
            self.flusher.put(result=result, delayed=delayed, release=1, follow=follow)
        if message.unique is not None and delayed is None:  # a retry is the same task, still waiting
            self.flusher.release_unique(message)

    def _follow_up(self, message: Message, state: str, payload: bytes | None) -> FollowUp | None:
        """What a finished workflow task starts (a chain's next step, callbacks, its chord's
        count), written with its result; None for a plain task."""
        return None if message.workflow is None else self.workflows.after(message, state, payload)

    def _event(self, kind: str, message: Message, **fields: Any) -> None:
        """Queue a task event for the capped events stream (``worker_send_task_events``)."""
        self.flusher.task_event(kind, message, **fields)
