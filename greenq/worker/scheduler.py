"""Scheduler: fires an app's periodic schedules from every worker (or ``greenq beat``), each fire
time exactly once however many run it.

Each round is one round trip that reads the Redis server's clock and every schedule's last
claimed fire time, then, only when something is due, one ``fire.lua`` per fire time: it claims
the fire time in the schedule's state hash and enqueues the message in the same script, so two
schedulers never both enqueue one fire, and a scheduler that dies between rounds loses nothing
another one will not pick up. A schedule with ``overlap=False`` fires with the unique key
``schedule:NAME`` (a task with ``unique_for``, with its own key): while the key's last run
waits or runs, ``fire.lua`` claims the fire time and enqueues nothing. Due times are judged by
the Redis server's clock, which all schedulers share. An app without schedules runs no
scheduler at all. Imports: broker.keys, broker.stack, message, schedules, signals; no worker
state.
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from greenq import signals
from greenq.broker.keys import Keys, delayed_member
from greenq.broker.stack import Link, script
from greenq.exceptions import BrokerError, BrokerUnavailable
from greenq.message import encode, now

if TYPE_CHECKING:
    from greenq.app import GreenQ
    from greenq.schedules import Schedule

logger = logging.getLogger(__name__)
STATE_TTL_MS = 30 * 86_400_000  # a schedule's state outlives its last fire by this much
MAX_WAIT_S = 1.0  # longest sleep between rounds (a schedule added meanwhile is seen by then)
UTC = datetime.timezone.utc


def fire_task_id(schedule: str, fire_ms: int) -> str:
    """The task id of one fire: the same for every scheduler, so a fire is recognisable."""
    return f"{schedule}@{fire_ms}"


class Scheduler:
    """Fires ``schedules`` of ``app`` on its own connection; ``run`` until stopped."""

    def __init__(self, app: GreenQ, schedules: Sequence[Schedule], who: str) -> None:
        self.app = app
        self.schedules = list(schedules)
        self.who = who
        self.send_events = app.conf.worker_send_task_events
        self.log = logging.LoggerAdapter(logger, {"worker": who})
        self.keyspace = app.broker.keys
        self.keys = [self.keyspace.schedule(self._queue(s), s.name) for s in self.schedules]
        self._last: list[int | None] | None = None  # per schedule, the last fire claimed (ms); read once
        self._next: list[datetime.datetime] = []  # per schedule, when to look at it again

    def _queue(self, schedule: Schedule) -> str:
        message, _ = self._build(schedule, 0, announce=False)  # looked at, never sent
        return message.queue

    def _build(self, schedule: Schedule, fire_ms: int, announce: bool = True) -> tuple[Any, bytes]:
        options = dict(schedule.options)
        message, body = self.app.build_message(
            schedule.task,
            list(schedule.args),
            dict(schedule.kwargs),
            queue=options.get("queue"),
            priority=options.get("priority"),
            countdown=options.get("countdown"),
            expires=_expires(options.get("expires"), fire_ms),
            task_id=fire_task_id(schedule.name, fire_ms),
            shard_key=f"schedule:{schedule.name}",  # a sharded queue: one shard per schedule
            announce=announce,
        )
        if schedule.overlap:
            return message, body
        # overlap=False: the fire holds the unique key schedule:NAME until its run ends
        conf = self.app.conf
        ttl_ms = message.unique_ttl_ms or int(conf.task_unique_ttl * 1000)
        message = message.with_changes(unique=f"schedule:{schedule.name}", unique_ttl_ms=ttl_ms)
        return message, encode(message, conf.max_message_bytes, conf.message_signing_key)

    def run(self, link: Link, stopping: threading.Event) -> None:
        """Fire rounds until ``stopping``; a broker outage is logged once and waited out."""
        self.log.info(
            "scheduler: %s schedule(s): %s", len(self.schedules), ", ".join(s.name for s in self.schedules)
        )
        failing = False
        while not stopping.is_set():
            try:
                wait_s = self.tick(link)
                if failing:
                    self.log.warning("scheduler: broker is back")
                failing = False
            except (BrokerUnavailable, BrokerError) as exc:
                if not failing:
                    self.log.warning("scheduler: %s; retrying", exc)
                failing, wait_s = True, MAX_WAIT_S
            stopping.wait(wait_s)

    def tick(self, link: Link) -> float:
        """One round: fire what is due; returns seconds until the next fire (at most ``MAX_WAIT_S``).

        The first round reads every schedule's last claimed fire; later rounds read only the
        server's clock and look only at schedules whose cached next fire has come, so idle
        schedules cost nothing per round. A cache made stale by another scheduler's fire is
        harmless: ``fire.lua`` refuses a fire time at or before the one claimed, and the reply
        brings the cache up to date.
        """
        first = self._last is None
        replies = link.pipeline([("TIME",), *(("HGET", key, "last") for key in self.keys if first)])
        seconds, micros = (int(x) for x in replies[0])
        clock = datetime.datetime.fromtimestamp(seconds + micros / 1e6, UTC)
        if self._last is None:
            self._last = [None if last is None else int(last) for last in replies[1:]]
            self._next = [clock] * len(self.schedules)
        due: list[tuple[int, Schedule, int]] = []
        for index, schedule in enumerate(self.schedules):
            if self._next[index] > clock:
                continue
            last = self._last[index]
            last_fire = None if last is None else datetime.datetime.fromtimestamp(last / 1000, UTC)
            due.extend(
                (index, schedule, round(fire.timestamp() * 1000))
                for fire in schedule.missed(last_fire, clock)
            )
            self._next[index] = schedule.next_fire(clock)
        if due:
            self._fire(link, due, int(clock.timestamp() * 1000))
        return max(0.005, min(MAX_WAIT_S, (min(self._next) - clock).total_seconds()))

    def _fire(self, link: Link, due: list[tuple[int, Schedule, int]], now_ms: int) -> None:
        commands = []
        built = []
        for index, schedule, fire_ms in due:
            message, body = self._build(schedule, fire_ms)
            built.append((message, body))
            delayed = message.eta is not None and message.eta > now()
            keys = self.keyspace
            target = keys.delayed(message.queue) if delayed else keys.stream(message.queue, message.priority)
            score = str(math.ceil((message.eta or 0) * 1000)) if delayed else ""
            member = delayed_member(message.priority, body) if delayed else b""
            unique = [keys.unique(message.queue, message.unique)] if message.unique is not None else []
            commands.append(
                (
                    "EVAL",
                    script("fire"),
                    2 + len(unique),
                    self.keys[index],
                    target,
                    *unique,
                    fire_ms,
                    body,
                    message.id,
                    self.who,
                    now_ms,
                    score,
                    member,
                    STATE_TTL_MS,
                    *([message.unique_ttl_ms] if unique else []),
                )
            )
        replies = link.pipeline(commands)
        fired, published = [], []
        for (index, schedule, fire_ms), item, reply in zip(due, built, replies, strict=True):
            if isinstance(reply, Exception):
                raise BrokerError(f"schedule {schedule.name!r}: fire failed: {reply}")
            if self._last is not None:  # fired here, skipped or claimed by another: it is the last now
                self._last[index] = max(self._last[index] or 0, fire_ms)
            if reply == 1:
                fired.append((schedule, fire_ms))
                published.append(item)
                self.log.info(
                    "schedule %s fired %s (%s)",
                    schedule.name,
                    fire_task_id(schedule.name, fire_ms),
                    schedule.task,
                )
            elif reply == 2:
                self.log.info(
                    "schedule %s skipped %s: the previous run is still waiting or running (overlap=False)",
                    schedule.name,
                    fire_task_id(schedule.name, fire_ms),
                )
        if published and signals.after_task_publish.receivers:  # not for fires skipped or claimed elsewhere
            signals.published(published)
        if fired and self.send_events:
            link.pipeline([_event(schedule, fire_ms, self.who, self.keyspace) for schedule, fire_ms in fired])


def _expires(value: Any, fire_ms: int) -> Any:
    """``expires`` in seconds counts from the fire time (Celery's meaning), not from enqueue."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(fire_ms / 1000 + float(value), UTC)
    return value


def _event(schedule: Schedule, fire_ms: int, who: str, keys: type[Keys]) -> tuple[Any, ...]:
    record = {
        "event": "scheduled",
        "schedule": schedule.name,
        "task": schedule.task,
        "id": fire_task_id(schedule.name, fire_ms),
        "fire_time": fire_ms / 1000,
        "worker": who,
        "time": time.time(),
    }
    return ("XADD", keys.EVENTS, "MAXLEN", "~", 100_000, "*", "e", orjson.dumps(record))
