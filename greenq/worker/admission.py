"""Admission: what a worker decides about a reserved message before it may run — pure, no Redis.

Verify the signature, decode, find the task, choose the lane (greenlet or child process), and
resolve the task's options against the app's settings ("the option on the task, else the
setting", in one place: ``setting``). A message that cannot run comes back as a ``Rejection``
naming why; the consumer dead-letters it. Imports: broker (Delivery), exceptions, message,
routing, worker.lanes; config and task as types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from greenq.broker import Delivery
from greenq.exceptions import DecodeError
from greenq.message import Message, decode, verify
from greenq.routing import route_task
from greenq.worker.lanes import Reserved

if TYPE_CHECKING:
    from greenq.config import Settings
    from greenq.task import Task


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
            )
        return found

    def admit(self, delivery: Delivery) -> Reserved | Rejection:
        """Check one delivery: what runs comes back ``Reserved`` in its lane."""
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
        return Reserved(delivery, message, task, self.policy(task).acks_late, lane)

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
