"""Admission: what a worker decides about a reserved message before it may run, and the
bookkeeping of flow control — no Redis of its own.

Verify the signature, decode, find the task, choose the lane (greenlet or child process), and
resolve the task's options against the app's settings ("the option on the task, else the
setting", in one place: ``setting``). A message that cannot run comes back as a ``Rejection``
naming why; the consumer dead-letters it. ``Flow`` holds what flow control needs on the worker
side (docs/flow-control.md): paused queues and runtime rates, the leases its tasks hold; its
round trips go through the ``Channel`` its caller passes. Imports: broker (Delivery),
exceptions, limits, message, routing, worker.lanes; config, task and the channel as types.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from greenq import http
from greenq.broker import Delivery
from greenq.exceptions import BrokerError, BrokerUnavailable, DecodeError
from greenq.limits import NO_LIMITS, Check, LeaseWork, Rate, TaskLimits, parse_rate, task_limits
from greenq.message import Message, decode, verify
from greenq.pools.base import Job, OnDone, Outcome
from greenq.routing import route_task
from greenq.worker.lanes import Reserved

if TYPE_CHECKING:
    from greenq.broker.channel import Channel
    from greenq.config import Settings
    from greenq.task import Task

Reject = Callable[["Channel", Delivery, "Rejection"], None]
CONTROL_EVERY_S = 0.5  # how often a worker reads its queues' runtime controls (pause, rate)
SWEEP_EVERY_S = 1.0  # how often it looks for parked messages whose leases ran out


def setting(task: Task, conf: Settings, name: str) -> Any:
    """The task's option ``name`` if it set one, else the app's ``task_<name>`` setting."""
    value = getattr(task.options, name)
    return getattr(conf, f"task_{name}") if value is None else value


@dataclass(frozen=True, slots=True)
class Policy:
    """A task's options resolved against the app's settings, once per task (not per message)."""

    acks_late: bool
    track_started: bool
    time_limit: float | None
    soft_time_limit: float | None
    limits: TaskLimits = NO_LIMITS


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that will not run, and why (recorded on its dead letter and its result)."""

    reason: str
    message: Message | None = None  # None when it could not be decoded


class Admission:
    """Turns deliveries into ``Reserved`` work or ``Rejection``s for one worker's app and lanes."""

    def __init__(
        self, tasks: dict[str, Task], conf: Settings, signing_keys: Sequence[str], has_cpu_lane: bool
    ) -> None:
        self.tasks = tasks
        self.conf = conf
        self.signing_keys = list(signing_keys)
        self.has_cpu_lane = has_cpu_lane
        self._policies: dict[str, Policy] = {}

    def policy(self, task: Task) -> Policy:
        """The task's resolved options (cached: options and settings do not change at run time)."""
        found = self._policies.get(task.name)
        if found is None:
            conf = self.conf
            found = self._policies[task.name] = Policy(
                acks_late=bool(setting(task, conf, "acks_late")),
                track_started=bool(setting(task, conf, "track_started")),
                time_limit=setting(task, conf, "time_limit"),
                soft_time_limit=setting(task, conf, "soft_time_limit"),
                limits=task_limits(task.options),
            )
        return found

    def admit(self, delivery: Delivery) -> Reserved | Rejection:
        """Check one delivery: what runs comes back ``Reserved`` in its lane."""
        if len(delivery.body) > self.conf.max_message_bytes:  # another client wrote it: not even decoded
            return Rejection(f"message of {len(delivery.body):,} bytes is over max_message_bytes")
        if self.signing_keys and not verify(delivery.body, self.signing_keys):
            return Rejection("signature missing or invalid", _best_effort(delivery.body))
        try:
            message = decode(delivery.body)
        except DecodeError as exc:
            return Rejection(f"malformed message: {exc}")
        task = self.tasks.get(message.task)
        if task is None:
            return Rejection(f"unknown task {message.task!r}", message)
        lane = "cpu" if self.has_cpu_lane and self.wants_child(task, message) else "main"
        policy = self.policy(task)
        return Reserved(delivery, message, task, policy.acks_late, lane, 0.0, policy)

    def wants_child(self, task: Task, message: Message) -> bool:
        """``cpu=True`` tasks, and tasks routed with ``{"pool": "prefork"}``, go to child processes."""
        if task.options.cpu:
            return True
        if self.conf.task_routes is None:
            return False
        route = route_task(
            message.task, routes=self.conf.task_routes, args=message.args, kwargs=message.kwargs
        )
        return route.pool == "prefork"


def expired(message: Message, clock: float) -> bool:
    """Did the message's ``expires`` pass before it could start?"""
    return message.expires is not None and message.expires < clock


def _best_effort(body: bytes) -> Message | None:
    """The message inside a body whose signature failed, when it decodes (for its result)."""
    try:
        return decode(body)
    except DecodeError:
        return None


class Flow:
    """A worker's side of flow control. ``gate`` runs in the fetcher, on its channel;
    ``upkeep`` and ``sleep`` in the maintenance loop, on its own.

    Owners: ``paused`` and ``rates`` are replaced whole by maintenance and read by the fetcher;
    ``leases`` (task id -> (queue, lease name)) gets entries from the fetcher and loses them in
    maintenance once given back; ``_finished`` (under ``_lock``) gets the task ids whose leases
    to give back from completion callbacks (any thread) and is emptied by maintenance.
    """

    def __init__(
        self,
        admission: Admission,
        queues: Sequence[str],
        lost_timeout_s: float,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.admission = admission
        self.queues = list(queues)
        self.log = log
        conf = admission.conf
        self.configured = {
            q: parse_rate(r, "queue_rate_limits") for q, r in (conf.queue_rate_limits or {}).items()
        }
        self.rates: dict[str, Rate] = {q: r for q in self.queues if (r := self.configured.get(q))}
        self.paused: frozenset[str] = frozenset()
        self.leases: dict[str, tuple[str, str]] = {}
        self.lease_ttl_ms = int(lost_timeout_s * 1000)
        self.extend_every_s = max(0.2, lost_timeout_s / 4)
        policies = {name: admission.policy(task).limits for name, task in admission.tasks.items()}
        self.concurrency = {
            name: limits.concurrency for name, limits in policies.items() if limits.concurrency
        }
        self.task_limited = any(limits is not NO_LIMITS for limits in policies.values())
        self.held_back = {"deferred": 0, "parked": 0}  # messages sent away by gate.lua
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._finished: list[str] = []
        self._parked_names: dict[str, list[str]] = {}
        self._next_control = self._next_sweep = self._next_extend = 0.0
        self.control_every_s = CONTROL_EVERY_S  # longer while Redis tells of changes (tracking.py)

    @property
    def limited(self) -> bool:
        """Does any message this worker reserves need the gate? (The fast path asks only this.)"""
        return self.task_limited or bool(self.rates) or bool(self.paused)

    def active(self, queues: list[str], stopping: threading.Event) -> list[str]:
        """The queues to reserve from: those not paused (the same list when none is). While
        every one is paused, waits (``queues`` once ``stopping`` is set)."""
        while self.paused:
            found = [q for q in queues if q not in self.paused]
            if found or stopping.wait(0.2):
                return found or queues
        return queues

    def gate(self, channel: Channel, accepted: list[Reserved], reject: Reject) -> list[Reserved]:
        """Pass reserved messages through their limits; returns those that may run now.

        Messages over a limit leave the stream in ``gate.lua``; those of a queue paused since they
        were reserved go back to it; those whose ``limit_key`` raised are refused (``reject``).
        Raises ``BrokerError``/``BrokerUnavailable`` like the reservation it belongs to (nothing
        is admitted; the fetcher returns what it still holds).
        """
        passed, refused = self._gate(channel, accepted)
        for reserved, reason in refused:
            reject(channel, reserved.delivery, Rejection(reason, reserved.message))
        return passed

    def _gate(
        self, channel: Channel, accepted: list[Reserved]
    ) -> tuple[list[Reserved], list[tuple[Reserved, str]]]:
        passed: list[Reserved] = []
        refused: list[tuple[Reserved, str]] = []
        returned = []
        by_queue: dict[str, list[tuple[Reserved, Check]]] = defaultdict(list)
        for reserved in accepted:
            queue = reserved.delivery.queue
            if queue in self.paused:
                returned.append(reserved.delivery)
                continue
            limits, rate = self.admission.policy(reserved.task).limits, self.rates.get(queue)
            if limits is NO_LIMITS and rate is None:
                passed.append(reserved)
                continue
            message = reserved.message
            try:
                check = limits.check(message.task, message.args, message.kwargs, rate)
            except Exception as exc:
                refused.append((reserved, f"limit_key raised {type(exc).__name__}: {exc}"))
                continue
            if check.rates or check.lease:
                by_queue[queue].append((reserved, check))
            else:
                passed.append(reserved)
        if returned:
            channel.requeue(returned)
        for queue, items in by_queue.items():
            verdicts = channel.gate(
                queue, [(r.delivery, r.message.id, check) for r, check in items], self.lease_ttl_ms
            )
            for (reserved, check), verdict in zip(items, verdicts, strict=True):
                if verdict == "a":
                    passed.append(reserved)
                    if check.lease is not None:
                        self.leases[reserved.message.id] = (queue, check.lease[0])
                else:
                    self.held_back["deferred" if verdict == "d" else "parked"] += 1
        return passed, refused

    def on_done(self, on_done: OnDone, task_id: str) -> OnDone:
        """``on_done`` for a task: one that holds a lease gives it back once it ends."""
        return on_done if task_id not in self.leases else functools.partial(self.after, on_done, task_id)

    def after(self, on_done: OnDone, task_id: str, job: Job, outcome: Outcome) -> None:
        """``on_done`` for a task holding a lease: the consumer's, then the lease goes back."""
        try:
            on_done(job, outcome)
        finally:
            self.finished(task_id)

    def finished(self, task_id: str) -> None:
        """A task ended (or will not run): give its lease back soon (maintenance wakes for it)."""
        if task_id in self.leases:
            with self._lock:
                self._finished.append(task_id)
            self.wake.set()

    def upkeep(self, channel: Channel, clock: float, releases_only: bool = False) -> None:
        """One round trip, when there is anything to do: give back finished tasks' leases,
        extend running ones', sweep parked messages whose leases ran out, read runtime controls."""
        controls = [] if releases_only or clock < self._next_control else self.queues
        sweeps = [] if releases_only or not self.concurrency or clock < self._next_sweep else self.queues
        extend = not releases_only and bool(self.leases) and clock >= self._next_extend
        with self._lock:
            finished, self._finished = self._finished, []
        work = self._lease_work(finished, extend, releases_only)
        if not (controls or sweeps or work):
            return
        try:
            flows, parked = channel.flow_upkeep(controls, sweeps, work, self.lease_ttl_ms)
        except (BrokerUnavailable, BrokerError):
            with self._lock:
                self._finished.extend(finished)
            raise
        for task_id in finished:
            self.leases.pop(task_id, None)
        if extend:
            self._next_extend = clock + self.extend_every_s
        if sweeps:
            self._parked_names = dict(zip(sweeps, parked, strict=True))
            self._next_sweep = clock + SWEEP_EVERY_S
        if controls:
            self._apply_controls(flows)
            self._next_control = clock + self.control_every_s

    def _lease_work(
        self, finished: list[str], extend: bool, releases_only: bool
    ) -> dict[str, dict[str, LeaseWork]]:
        work: dict[str, dict[str, LeaseWork]] = defaultdict(dict)

        def item(queue: str, name: str) -> LeaseWork | None:
            found = work[queue].get(name)
            most = self.concurrency.get(name.split("|", 1)[0])
            if found is None and most:
                found = work[queue][name] = LeaseWork(most)
            return found

        for task_id in finished:
            queue, name = self.leases.get(task_id, ("", ""))
            if queue and (entry := item(queue, name)) is not None:
                entry.release.append(task_id)
        if extend:
            for task_id, (queue, name) in list(self.leases.items()):
                if (entry := item(queue, name)) is not None:
                    entry.extend.append(task_id)
        if not releases_only:
            for queue, names in self._parked_names.items():
                for name in names:
                    item(queue, name)
            self._parked_names = {}
        return {queue: names for queue, names in work.items() if names}

    def _apply_controls(self, flows: list[dict[str, str]]) -> None:
        paused, rates = set(), {}
        for queue, flow in zip(self.queues, flows, strict=True):
            if "paused" in flow:
                paused.add(queue)
            rate = self.configured.get(queue)
            if "rate" in flow:
                try:
                    rate = parse_rate(flow["rate"], f"queue {queue} runtime rate")
                except ValueError as exc:  # ConfigError: a hand-written value; keep the setting's
                    self.log.error("%s", exc)
            if rate is not None:
                rates[queue] = rate
        before, self.paused, self.rates = (self.paused, self.rates), frozenset(paused), rates
        for queue in sorted(paused - before[0]):
            self.log.warning("queue %s paused: not reserving from it (greenq queue resume %s)", queue, queue)
        for queue in sorted(before[0] - paused):
            self.log.warning("queue %s resumed", queue)
        for queue in sorted(set(rates) | set(before[1])):
            if rates.get(queue) != before[1].get(queue):
                shown = rates[queue].text if queue in rates else "none"
                self.log.warning("queue %s rate limit now %s", queue, shown)

    def controls_changed(self) -> None:
        """A queue's controls may have changed: read them at the next ``upkeep``."""
        self._next_control = 0.0

    def next_upkeep(self) -> float:
        """When ``upkeep`` next has work of its own (monotonic clock)."""
        soonest = self._next_control
        if self.concurrency:
            soonest = min(soonest, self._next_sweep)
        if self.leases:
            soonest = min(soonest, self._next_extend)
        return soonest

    def sleep(
        self,
        stopping: threading.Event,
        timeout_s: float,
        channel: Channel,
        woken: Callable[[], bool] | None = None,
    ) -> None:
        """Wait up to ``timeout_s``, giving back leases as soon as their tasks end; return early
        once ``woken()`` says so (it is asked each time ``wake`` is set)."""
        deadline = time.monotonic() + timeout_s
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or not self.wake.wait(left):
                return
            self.wake.clear()
            try:
                self.upkeep(channel, time.monotonic(), releases_only=True)
            except (BrokerUnavailable, BrokerError):
                return
            if woken is not None and woken():
                return

    def info(self) -> dict[str, Any]:
        """For the heartbeat: paused queues, rates in force, leases held, messages held back."""
        return {
            "paused": sorted(self.paused),
            "rate_limits": {q: r.text for q, r in self.rates.items()},
            "leases": len(self.leases),
            **self.held_back,
            "http_hosts": http.host_states(),  # greenq.http hosts in back-off or with an open circuit
        }
