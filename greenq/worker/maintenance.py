"""Maintenance: a worker's liveness loop — heartbeat, moving due delayed messages, recovering
dead workers' messages, terminating revoked child-process tasks — and the heartbeat record.

Runs in its own thread on its own connection (``broker.recovery.Upkeep``). Where Redis tracks
the keys it reads (``broker.tracking.Changes``), it reads the delayed sets and queue controls
when told they changed, when the soonest delayed message is due, and once a second all the
same, and wakes every 100 ms only while tasks run (leases, terminate=True): an idle worker on
any number of queues wakes a few times a second. Without tracking it polls every 100 ms.
The heartbeat says who the worker is and what it runs: task names, ids and start times, never
arguments (they are user data, and unbounded); an operator asks for one task's arguments
through ``greenq:ask:{CONSUMER}`` (docs/keyspace.md).
Each heartbeat also lists the unique keys its running early-ack tasks hold (only while there are
some), so that recovery can free them if this worker dies mid-task.
It also runs flow control's upkeep (``Flow``): leases, parked messages, paused queues.
Imports: broker.channel, broker.keys, broker.recovery, broker.tracking, exceptions,
worker.admission, worker.ledger, worker.stats.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from greenq import signals
from greenq.broker.channel import Channel
from greenq.broker.recovery import Upkeep
from greenq.broker.tracking import Changes
from greenq.exceptions import BrokerError, BrokerUnavailable
from greenq.worker.admission import CONTROL_EVERY_S, Flow
from greenq.worker.ledger import Ledger
from greenq.worker.stats import Backoff, Stats

ACTIVE_MAX = 100  # tasks listed in a heartbeat
ARGS_MAX_CHARS = 2_000  # an asked-for task's arguments are cut to this size
GREENLET_CHECK_S = 0.5  # how often a gevent pool's running tasks are checked for terminate=True
TICK_S = 0.1  # the loop's period while tasks run or Redis does not track its reads
IDLE_PROBE_S = 1.0  # tracked and idle: the delayed sets are read at least this often all the same


class Maintenance:
    """The maintenance loop of one worker (``run``), and its heartbeat record (``info``)."""

    def __init__(
        self,
        upkeep: Upkeep,
        ledger: Ledger,
        stats: Stats,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        consumer_id: str,
        name: str,
        queues: Sequence[str],
        task_names: Sequence[str],
        lost_timeout_s: float,
        max_deliveries: int,
        extra_info: dict[str, Any],
        on_dead_lettered: Callable[[list[bytes], str], None],
        flow: Flow,
    ) -> None:
        self.upkeep = upkeep
        self.ledger = ledger
        self.stats = stats
        self.log = log
        self.consumer_id = consumer_id
        self.name = name
        self.queues = list(queues)
        self.task_names = sorted(task_names)
        self.lost_timeout_s = lost_timeout_s
        self.max_deliveries = max_deliveries
        self.extra_info = extra_info
        self.on_dead_lettered = on_dead_lettered
        self.flow = flow  # flow control's leases and queue controls (docs/flow-control.md)
        self.flow_channel = Channel(upkeep.link, 0, keys=upkeep.keys)
        self.changes = Changes(upkeep.link, flow.wake.set)  # what the link reads, Redis watches
        self._next_greenlet_check = 0.0
        self._asked: list[str] = []  # task ids whose arguments an operator asked for
        self._held_listed = False  # the unique-held hash in Redis lists something

    def info(self) -> bytes:
        """The heartbeat record: who this worker is and what it is doing."""
        stats, lanes = self.stats, self.ledger.lanes
        running = list(self.ledger.running.values())
        record: dict[str, Any] = {
            "consumer": self.consumer_id,
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues,
            "prefetch_capacity": self.ledger.capacity,
            "held": self.ledger.held,
            "reserved": lanes.reserved(),
            "running": lanes.running(),
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
            "rss_kib": _rss_kib(),
            "active": [
                {"id": r.message.id, "task": r.message.task, "started": r.started}
                for r in running[:ACTIVE_MAX]
            ],
            "tasks": self.task_names,
            **self.flow.info(),
            **lanes.stats(),
            **self.extra_info,
        }
        if self._asked:
            asked = set(self._asked)
            record["args"] = {
                r.message.id: _cut({"args": r.message.args, "kwargs": r.message.kwargs})
                for r in running
                if r.message.id in asked
            }
        return orjson.dumps(record)

    def heartbeat(self) -> None:
        ttl_ms = int(self.lost_timeout_s * 1000)
        held = self.held_unique()
        listed = bool(held)
        fresh, self._asked = self.upkeep.heartbeat(
            self.consumer_id,
            self.info(),
            ttl_ms,
            self.queues,
            held if held or self._held_listed else None,  # None: no command at all
        )
        self._held_listed = listed
        signals.heartbeat_sent.send(sender=self)
        if not fresh and self.stats.processed:
            self.log.error(
                "heartbeat had expired: this worker was presumed dead and its unacked "
                "messages may have been recovered by others (was the hub blocked?)"
            )

    def held_unique(self) -> dict[str, str]:
        """Unique key -> task id of the early-ack unique tasks running now: if this worker dies,
        nothing else would free their keys (a late-ack one is recovered and runs again)."""
        return {
            self.upkeep.keys.unique(r.message.queue, r.message.unique): r.message.id
            for r in list(self.ledger.running.values())
            if r.message.unique is not None and not r.acks_late
        }

    def run(self, stopping: threading.Event) -> None:
        backoff = Backoff(self.log, "maintenance", self.stats)
        beat_every = max(0.2, self.lost_timeout_s / 4)
        recover_every = max(0.2, min(1.0, self.lost_timeout_s / 4))
        next_beat = time.monotonic() + beat_every
        next_recover = time.monotonic()
        next_probe = probed = 0.0  # when the delayed sets are to be read next, were read last
        changes = self.changes
        changes.start(stopping)
        while not stopping.is_set():
            try:
                clock = time.monotonic()
                tracked = changes.live()
                if not tracked or clock >= next_probe or (changes.changed and clock >= probed + TICK_S):
                    if changes.track():  # set up anew, or told of a change: the flow hashes too
                        self.flow.controls_changed()
                    soonest = self.upkeep.move_due(self.queues)
                    probed = time.monotonic()
                    next_probe = probed + (IDLE_PROBE_S if soonest is None else min(IDLE_PROBE_S, soonest))
                    self.flow.control_every_s = IDLE_PROBE_S if changes.live() else CONTROL_EVERY_S
                if clock >= next_beat:
                    self.heartbeat()
                    next_beat = clock + (0.2 if self._asked else beat_every)
                if clock >= next_recover:
                    self.recover()
                    next_recover = clock + recover_every
                self.terminate_revoked()
                self.flow.upkeep(self.flow_channel, clock)
                backoff.ok()
            except (BrokerUnavailable, BrokerError) as exc:
                backoff.failed(exc, stopping)
                continue
            clock = time.monotonic()
            woken = None
            if not changes.live():
                wake_at = min(next_probe, clock + TICK_S)  # polling, as without tracking
            elif changes.changed:  # told of a change within TICK_S of the last read
                wake_at = min(next_probe, probed + TICK_S)
            else:
                wake_at = min(next_probe, next_beat, next_recover, self.flow.next_upkeep())
                if self.ledger.running:
                    wake_at = min(wake_at, clock + TICK_S)  # leases, terminate=True
                woken = changes.is_changed
            # Wakes early to give leases back as soon as their tasks end, and on a change.
            self.flow.sleep(stopping, wake_at - clock, self.flow_channel, woken)
        changes.close()

    def recover(self) -> None:
        requeued, dead = self.upkeep.recover(
            self.queues, self.consumer_id, self.max_deliveries, int(self.lost_timeout_s * 1000)
        )
        if requeued or dead:
            self.stats.recovered += requeued
            self.stats.dead_lettered += len(dead)
            self.log.warning("recovered %s messages of dead workers, dead-lettered %s", requeued, len(dead))
        if dead:
            self.on_dead_lettered(dead, "its delivery killed the worker max_deliveries times")

    def terminate_revoked(self) -> None:
        """Stop tasks revoked with terminate=True: kill their prefork child, end their greenlet.
        A gevent pool may run hundreds of tasks: its ids are looked up every GREENLET_CHECK_S."""
        clock = time.monotonic()
        for pool in self.ledger.lanes.pools.values():
            running = getattr(pool, "running_keys", None)
            if running is not None and pool.kind == "gevent":
                if clock < self._next_greenlet_check:
                    continue
                self._next_greenlet_check = clock + GREENLET_CHECK_S
            keys = running() if running else {}
            if not keys:
                continue
            doomed = set(self.upkeep.to_terminate(list(keys.values())))
            for key, task_id in keys.items():
                if task_id in doomed and pool.terminate(key):  # type: ignore[attr-defined]
                    self.log.warning("terminating task %s: revoked with terminate=True", task_id)


def _cut(value: Any) -> str:
    """Arguments as JSON text, cut to ``ARGS_MAX_CHARS``."""
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= ARGS_MAX_CHARS else text[: ARGS_MAX_CHARS - 1] + "…"


def _rss_kib() -> int | None:
    """This process's resident memory in KiB (Linux ``/proc``; None elsewhere), for status and
    the dashboard."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return None
