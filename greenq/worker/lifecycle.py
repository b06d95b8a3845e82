"""Lifecycle: how a consumer starts, stops gracefully, and exits hard without losing track of
work — mixed into ``Consumer``, whose loops and parts it starts and stops.

Start registers the worker (its first heartbeat), retrying an unreachable broker with back-off
for ``broker_connection_timeout`` seconds. A graceful stop returns reserved messages at once,
waits for running tasks, flushes, unregisters. The hard exit (a second signal) writes what it
still can in one short round trip — outcomes not yet flushed, and FAILURE (``WorkerLostError``)
for each running early-ack task, which nobody will run again — and says which tasks it left.
Imports: broker (Channel, Link; the facade as a type), config, exceptions, worker.flusher; the
other worker parts as types.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from greenq.broker import Delivery
from greenq.broker.channel import Channel
from greenq.broker.stack import Link
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable
from greenq.message import FAILURE, result_payload
from greenq.worker.flusher import FlushWork

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker
    from greenq.config import Settings
    from greenq.worker.flusher import Flusher
    from greenq.worker.lanes import Lanes
    from greenq.worker.ledger import Ledger
    from greenq.worker.maintenance import Maintenance
    from greenq.worker.stats import Stats

RETRY_MAX_S = 5.0  # longest wait between two start-up connection attempts
ABANDON_TIMEOUT_S = 3.0  # the hard exit's one round trip


class Lifecycle:
    """Start, graceful stop and hard exit; ``Consumer`` provides the attributes below."""

    conf: Settings
    broker: RedisBroker
    lanes: Lanes
    ledger: Ledger
    flusher: Flusher
    maintenance: Maintenance
    stats: Stats
    log: logging.LoggerAdapter[logging.Logger]
    consumer_id: str
    block_ms: int
    result_ttl_ms: int
    _stopping: threading.Event
    _threads: list[threading.Thread]

    def loops(self) -> list[Callable[[], None]]:
        raise NotImplementedError

    def _failure_record(self, task_id: str, task: str, exc_type: str, text: str, retries: int) -> bytes:
        """A FAILURE record this worker writes for a task that did not run to its end."""
        return result_payload(
            task_id,
            task,
            FAILURE,
            exc_type=exc_type,
            exc_message=text,
            retries=retries,
            worker=self.consumer_id,
        )

    def start(self) -> None:
        """Register (first heartbeat), then start the pools and the loops. Raises
        ``BrokerUnavailable`` if Redis cannot be reached within ``broker_connection_timeout``."""
        self._register()
        for lane_pool in self.lanes.pools.values():
            lane_pool.start()
        for loop in self.loops():
            thread = threading.Thread(target=self._guarded, args=(loop,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _register(self) -> None:
        conf = self.conf
        deadline = time.monotonic() + conf.broker_connection_timeout
        delay = 0.25
        while True:
            try:
                self.maintenance.heartbeat()
                return
            except BrokerUnavailable as exc:
                left = deadline - time.monotonic()
                if not conf.broker_connection_retry_on_startup or left <= 0:
                    raise BrokerUnavailable(
                        f"broker {mask_url(self.broker.url)} unreachable; gave up after "
                        f"{conf.broker_connection_timeout:g} s (broker_connection_timeout): {exc}"
                    ) from exc
                delay = min(delay * 2, RETRY_MAX_S, left)
                self.log.warning("%s; retrying in %.1f s (%.0f s left)", exc, delay, left)
                time.sleep(delay)

    def _guarded(self, loop: Callable[[], None]) -> None:
        """Run a loop; a bug in one round is logged and the loop restarts, never silently dies."""
        while True:
            try:
                loop()
                return
            except Exception:
                self.log.exception("%s crashed; restarting it", getattr(loop, "__name__", "loop"))
                self._stopping.wait(1.0)

    def stop(self, timeout_s: float, force: threading.Event | None = None) -> bool:
        """Graceful stop: stop fetching, return reserved messages at once, wait for running tasks
        up to ``timeout_s``, flush results and acks, unregister. True if nothing was left running."""
        self._stopping.set()
        self.ledger.wake_all()
        fetcher, dispatcher = self._threads[0], self._threads[1]
        # Each loop ends the round it is in first (a round trip is bounded by the socket timeout):
        # a batch the dispatcher took, early acks written, must reach the pool before it is
        # waited for; a starved host can stretch that round past a few seconds.
        bound = self.broker.socket_timeout_s + 5
        fetcher.join(self.block_ms / 1000 + bound)
        dispatcher.join(bound)
        if fetcher.is_alive() or dispatcher.is_alive():
            self.log.warning("stopping while a fetch or dispatch round is still in flight")
        returned = self.ledger.take_reserved()
        channel = self.broker.channel()
        if returned:
            self._requeue_with_retry(channel, [r.delivery for r in returned])
            self.ledger.disown(r.delivery for r in returned)
        self.log.info(
            "returned %s reserved; waiting for %s running (up to %ss)",
            f"{len(returned):,}",
            f"{self.lanes.running():,}",
            timeout_s,
        )
        finished = self._wait_pool(timeout_s, force)
        self.flusher.wake.set()
        self.flusher.done.wait(timeout_s + 10)
        # Unregister even if tasks are still running: this process is about to exit, and
        # other workers should recover its late-acked messages now, not after the timeout.
        with contextlib.suppress(BrokerUnavailable):
            self.broker.upkeep(channel.link).unregister(self.consumer_id)
        channel.close()
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

    def _requeue_with_retry(self, channel: Channel, deliveries: list[Delivery]) -> None:
        for _ in range(20):
            try:
                channel.requeue(deliveries)
                return
            except BrokerUnavailable as exc:
                self.log.warning("requeue failed (%s); retrying", exc)
                time.sleep(0.5)
        self.log.error(
            "could not return %s reserved messages; they will be recovered after worker_lost_timeout",
            len(deliveries),
        )

    def abandon(self, why: str) -> list[str]:
        """The hard exit: write outcomes not yet flushed and FAILURE (WorkerLostError) for each
        running early-ack task, in one round trip; return the ids of the tasks left running.
        Late-ack tasks are not failed: their messages are unacked and run again elsewhere."""
        running = list(self.ledger.running.values())
        work = FlushWork()
        self.flusher.take(work)
        text = f"worker {self.consumer_id} exited ({why}) while the task was running"
        for reserved in running:
            if not reserved.acks_late:
                message = reserved.message
                record = self._failure_record(
                    message.id, message.task, "WorkerLostError", text, message.retries
                )
                work.results.append((message.id, record))
        link = Link(self.broker.url, ABANDON_TIMEOUT_S, ABANDON_TIMEOUT_S)
        channel = Channel(link, self.broker.dead_letter_max, self.broker.queue_shards, self.broker.keys)
        try:
            channel.flush(work.acks, work.results, self.result_ttl_ms, work.delayed, work.events, work.dead)
        except (BrokerUnavailable, BrokerError) as exc:
            self.log.error("could not record the abandoned tasks: %s", exc)
        finally:
            channel.close()
        ids = [r.message.id for r in running]
        if ids:
            late = sum(r.acks_late for r in running)
            self.log.warning(
                "%s: abandoned %s running tasks (%s early-ack marked FAILURE WorkerLostError, %s late-ack"
                " left for recovery): %s",
                why,
                len(ids),
                len(ids) - late,
                late,
                " ".join(ids),
            )
        return ids
