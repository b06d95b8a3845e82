"""The worker's side of workflows: what a finished chain step, chord member or task with
callbacks starts, and a chord body's inputs.

Follow-ups are planned here (``greenq.workflow``, the producer's own planner) and handed to the
flusher with the task's result, so they are written in the same ``MULTI`` as that result and its
late ack: a chain's next step is enqueued exactly when its parent's result is, with no extra
round trip and no polling; a chord member is counted by ``chord.lua`` in that round trip too.
The messages a follow-up writes travel with it, for the flusher's ``after_task_publish``.
Also ``result_extended``: the result record with the task's name, arguments and times.
Imports: message, signals, workflow, broker (keys, channel helpers), pools.base (Outcome).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from greenq import signals
from greenq.broker.channel import store_results_command
from greenq.broker.keys import Keys, enqueue_commands
from greenq.broker.stack import Link
from greenq.message import FAILURE, REVOKED, SUCCESS, Message, encode, now, result_payload
from greenq.pools.base import Outcome
from greenq.workflow import Continuation, PlanningApp, plan, result_id, task_ids

log = logging.getLogger("greenq.worker")
EXPIRED = '{"exc_message": "the chord state expired (result_expires) before the chord ended"}'


@dataclass(slots=True)
class ChordCount:
    """One finished chord member, for ``chord.lua`` (batched per chord by the flush)."""

    key: str
    stream: str
    delayed: str
    index: int
    value: bytes
    failure: bytes


@dataclass(slots=True)
class FollowUp:
    """What a finished workflow task writes with its result. ``messages``: the new tasks among
    ``commands``, for ``after_task_publish`` once the flusher has written them."""

    payload: bytes | None
    commands: list[tuple[Any, ...]] = field(default_factory=list)
    chord: ChordCount | None = None
    messages: list[tuple[Message, bytes]] = field(default_factory=list)


class Workflows:
    """Plans follow-ups for one worker's app."""

    def __init__(
        self, app: PlanningApp, result_ttl_ms: int, consumer_id: str, keys: type[Keys] = Keys
    ) -> None:
        self.app = app
        self.keys = keys  # the app's keyspace (its key_prefix)
        self.ttl_ms = result_ttl_ms
        self.consumer_id = consumer_id

    def after(self, message: Message, state: str, payload: bytes | None) -> FollowUp:
        """The follow-ups of ``message``, finished in ``state`` (not RETRY), and its result record
        with ``parent`` and ``children`` added."""
        links: dict[str, Any] = message.workflow or {}
        record: dict[str, Any] = orjson.loads(payload) if payload is not None else {}
        follow = FollowUp(payload)
        children: list[str] = []
        headers = message.headers or None  # the trace context: what it starts joins its trace
        if state == SUCCESS:
            value = record.get("result")
            rest = links.get("c")
            if rest:
                cont = Continuation(
                    rest[1:], links.get("ch"), links.get("ie", []), message.id, headers=headers
                )
                children += self._start(follow, rest[0], (value,), cont, message)
            elif links.get("ch"):
                follow.chord = _count(links["ch"], value, b"", self.keys)
            for callback in links.get("l", ()):
                cont = Continuation(parent=message.id, headers=headers)
                children += self._start(follow, callback, (value,), cont, message)
        elif state in (FAILURE, REVOKED):
            member = record.get("member")  # a chord body failed by its header: the member's error
            error = {
                "task": (member or {}).get("task", message.task),
                "exc_type": (member or record).get("exc_type"),
                "exc_message": (member or record).get("exc_message"),
            }
            failed_id = (member or {}).get("id", message.id)
            for errback in (*links.get("le", ()), *links.get("ie", ())):
                cont = Continuation(parent=message.id, headers=headers)
                children += self._start(follow, errback, (failed_id, error), cont, message)
            not_run = [i for step in links.get("c", ()) for i in task_ids(step)]
            if not_run:
                text = f"not run: an earlier step, {message.task}[{message.id}], failed: "
                text += str(error["exc_message"])
                follow.commands.append(self._records(not_run, error["exc_type"] or state, text, message.id))
            if links.get("ch"):
                failure = {"id": message.id, **error}
                follow.chord = _count(links["ch"], None, orjson.dumps(failure), self.keys)
        if payload is not None and (children or links.get("p")):
            record.update(parent=links.get("p"), children=children)
            follow.payload = orjson.dumps(record)
        return follow

    def _start(
        self,
        follow: FollowUp,
        node: dict[str, Any],
        prepend: tuple[Any, ...],
        cont: Continuation,
        parent: Message,
    ) -> list[str]:
        """Plan one follow-up into ``follow``; the ids of the messages it enqueues. One that cannot
        be built (its arguments do not fit, a bad option) gets a FAILURE record instead."""
        try:
            planned = plan(self.app, node, prepend, cont, self.ttl_ms, self.keys)
        except Exception as exc:
            log.error("workflow step after %s[%s] could not be started: %s", parent.task, parent.id, exc)
            text = f"could not be started after {parent.task}[{parent.id}]: {exc}"
            follow.commands.append(self._records([result_id(node)], type(exc).__name__, text, parent.id))
            return []
        queues = {m.queue for m, _ in planned.items}
        follow.commands += [*planned.first, *enqueue_commands(planned.items, queues, self.keys)]
        follow.messages += planned.items
        return [m.id for m, _ in planned.items]

    def _records(self, ids: Sequence[str], exc_type: str, text: str, parent: str) -> tuple[Any, ...]:
        records = [
            (
                task_id,
                result_payload(
                    task_id,
                    "",
                    FAILURE,
                    exc_type=exc_type,
                    exc_message=text,
                    worker=self.consumer_id,
                    extra={"parent": parent},
                ),
            )
            for task_id in ids
        ]
        return store_results_command(records, self.ttl_ms, self.keys)

    def prepare_body(self, link: Link, reserved: Any) -> Outcome | None:
        """A chord body about to start gets its header's results as its first argument (one
        round trip, once per chord); if the header failed, the chord's FAILURE instead."""
        message = reserved.message
        results, failure = self.chord_inputs(link, [message])[0]
        if results is None:
            return self.chord_failure(message, failure or "{}")
        reserved.message = message.with_changes(args=body_args(message, results))
        return None

    def chord_inputs(
        self, link: Link, messages: Sequence[Message]
    ) -> list[tuple[list[Any] | None, str | None]]:
        """For each chord body: (its header's results in member order, None) or (None, why the
        chord failed), in one pipelined round trip."""
        commands = []
        for message in messages:
            ref = (message.workflow or {})["cr"]
            fields = ["n", "f", *(f"r{i}" for i in range(int(ref["n"])))]
            commands.append(("HMGET", self.keys.chord(message.queue, ref["id"]), *fields))
        inputs: list[tuple[list[Any] | None, str | None]] = []
        for reply in link.pipeline(commands):
            if reply[0] is None:
                inputs.append((None, EXPIRED))
            elif reply[1] is not None:
                inputs.append((None, reply[1].decode()))
            else:
                inputs.append(([orjson.loads(v) if v else None for v in reply[2:]], None))
        return inputs

    def chord_failure(self, message: Message, failure: str) -> Outcome:
        """The FAILURE of a chord body whose header failed: ``ChordError`` naming the member."""
        member = orjson.loads(failure)
        text = f"chord member {member.get('task', '?')}[{member.get('id', '?')}] failed: "
        text += f"{member.get('exc_type')}: {member.get('exc_message')}"
        payload = result_payload(
            message.id,
            message.task,
            FAILURE,
            exc_type="ChordError",
            exc_message=text,
            retries=message.retries,
            worker=self.consumer_id,
            extra={"member": member},
        )
        return Outcome(FAILURE, payload, error=f"ChordError: {text}")


def body_args(message: Message, results: list[Any]) -> list[Any]:
    """A chord body's arguments: the header's results in place of the placeholder its producer
    put first (unless it is immutable: ``r`` is 0)."""
    if not (message.workflow or {})["cr"].get("r", 1):
        return list(message.args)
    return [results, *list(message.args)[1:]]


def _count(membership: dict[str, Any], value: Any, failure: bytes, keys: type[Keys]) -> ChordCount:
    queue, priority = membership["q"], int(membership.get("p") or 0)
    return ChordCount(
        key=keys.chord(queue, membership["id"]),
        stream=keys.stream(queue, priority),
        delayed=keys.delayed(queue),
        index=int(membership["i"]),
        value=orjson.dumps(value),
        failure=failure,
    )


def extended(payload: bytes, message: Message, started: float | None) -> bytes:
    """``result_extended``: the record with the task's arguments, queue and start time."""
    record = orjson.loads(payload)
    record.update(args=list(message.args), kwargs=message.kwargs, queue=message.queue, date_started=started)
    return orjson.dumps(record)


def retry_message(message: Message, delay_s: float | None, signing_key: str | None) -> tuple[Message, bytes]:
    """What a retry writes to the delayed set: the next attempt, announced as a producer's message
    is (``before_task_publish``: in Celery a retry is published anew)."""
    retry = message.with_changes(retries=message.retries + 1, eta=now() + (delay_s or 0.0))
    if signals.before_task_publish.receivers:
        retry = signals.before_publish(retry)
    return retry, encode(retry, None, signing_key)
