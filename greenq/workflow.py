"""Workflow planning: a canvas tree, in its plain-JSON dict form, to the messages and Redis
commands that start it.

The producer (``chain(...)()``, ``chord(...)()``) and the worker (a chain's next step, a
callback) both plan with these functions, so a step is built the same way wherever it starts.
A message's links travel in its envelope field ``w`` (docs/workflows.md has the table): ``c``
the chain steps after it, ``ch`` its chord membership, ``cr`` (a chord body) where its header's
results are, ``l``/``le`` its own callbacks, ``ie`` the error callbacks it inherited, ``p`` its
parent's id. Every task id is assigned before anything is sent (``freeze``), so results are
known up front and a step re-planned after a crash keeps its id.

Imports: message, exceptions, broker.keys (key names only); never the canvas classes (they
import this), never the worker.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from greenq.broker.keys import Keys
from greenq.exceptions import GreenqError
from greenq.message import Message, new_id

GROUP_TASK, CHAIN_TASK, CHORD_TASK = "greenq.group", "greenq.chain", "greenq.chord"


class UnsupportedCanvas(GreenqError, ValueError):
    """A canvas shape greenq does not run (docs/workflows.md, "Not supported"), raised when it is
    built or applied, never half-sent."""


class PlanningApp(Protocol):
    """What planning needs of the app (a ``GreenQ``)."""

    def build_message(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> tuple[Message, bytes]: ...


@dataclass(slots=True)
class Continuation:
    """What comes after the step being planned."""

    chain: list[dict[str, Any]] = field(default_factory=list)  # steps after it
    chord: dict[str, Any] | None = None  # header membership: {"id", "q", "p", "i"}
    errbacks: list[dict[str, Any]] = field(default_factory=list)  # inherited link_error
    parent: str | None = None
    results_from: dict[str, Any] | None = None  # a chord body's ref; taken by the first task
    headers: dict[str, Any] | None = None  # the parent's (its trace context), for the next step


@dataclass(slots=True)
class Plan:
    """``first``: commands to run before the messages (chord state, group member lists)."""

    first: list[tuple[Any, ...]] = field(default_factory=list)
    items: list[tuple[Message, bytes]] = field(default_factory=list)


def kind(node: Mapping[str, Any]) -> str | None:
    return node.get("subtask_type")


def chain_node(tasks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return _node(CHAIN_TASK, "chain", {"tasks": list(tasks)})


def group_node(tasks: Sequence[dict[str, Any]], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _node(GROUP_TASK, "group", {"tasks": list(tasks)}, options)


def chord_node(
    header: dict[str, Any], body: dict[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return _node(CHORD_TASK, "chord", {"header": header, "body": body}, options)


def _node(
    task: str, kind_: str, kwargs: dict[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "task": task,
        "args": [],
        "kwargs": kwargs,
        "options": dict(options or {}),
        "immutable": False,
        "subtask_type": kind_,
    }


def freeze(node: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the tree with every task id and group id assigned (kept where given), chains
    flattened, and a group followed by more steps turned into a chord (as Celery does)."""
    kind_ = kind(node)
    out = dict(node)
    options = dict(node.get("options") or {})
    for key in ("link", "link_error"):
        if key in options:
            options[key] = [freeze(callback) for callback in options[key]]
    if kind_ == "chain":
        tasks = _flatten([freeze(t) for t in node["kwargs"]["tasks"]])
        if not tasks:
            raise UnsupportedCanvas("an empty chain has nothing to run")
        tasks = _chords_from_groups(tasks)
        if len(tasks) == 1 and not options:
            return tasks[0]
        out["kwargs"] = {"tasks": tasks}
    elif kind_ == "group":
        options.setdefault("task_id", new_id())
        members = [freeze(t) for t in node["kwargs"]["tasks"]]
        for member in members:
            if kind(member) == "group":
                raise UnsupportedCanvas("a group inside a group: flatten it (group(a, b, c)) or chain it")
        out["kwargs"] = {"tasks": members}
    elif kind_ == "chord":
        header = freeze(node["kwargs"]["header"])
        body = freeze(node["kwargs"]["body"])
        if kind(body) == "group":
            raise UnsupportedCanvas("a chord whose body is a group: make the body a task or a chain")
        out["kwargs"] = {"header": header, "body": body}
    elif kind_ is None:
        options.setdefault("task_id", new_id())
    else:
        raise UnsupportedCanvas(f"unknown canvas type {kind_!r}")
    out["options"] = options
    return out


def _flatten(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chain inside a chain is its steps (its own options, if any, are kept on its last)."""
    flat: list[dict[str, Any]] = []
    for task in tasks:
        flat.extend(task["kwargs"]["tasks"] if kind(task) == "chain" else [task])
    return flat


def _chords_from_groups(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``chain(a, group(b, c), d, e)`` is ``chain(a, chord(group(b, c), chain(d, e)))``."""
    for index, task in enumerate(tasks[:-1]):
        if kind(task) == "group":
            rest = tasks[index + 1 :]
            body = rest[0] if len(rest) == 1 else chain_node(rest)
            return [*tasks[:index], chord_node(task, freeze(body))]
    return tasks


def result_id(node: Mapping[str, Any]) -> str:
    """The id whose result is the (frozen) node's result: a task's own, a chain's last step's,
    a chord's body's, a group's group id."""
    kind_ = kind(node)
    if kind_ == "chain":
        return result_id(node["kwargs"]["tasks"][-1])
    if kind_ == "chord":
        return result_id(node["kwargs"]["body"])
    return str(node["options"]["task_id"])


def task_ids(node: Mapping[str, Any]) -> list[str]:
    """Every task id in a frozen tree (not group ids): what a broken chain marks as not run."""
    kind_ = kind(node)
    if kind_ in ("chain", "group"):
        return [i for t in node["kwargs"]["tasks"] for i in task_ids(t)]
    if kind_ == "chord":
        return [*task_ids(node["kwargs"]["header"]), *task_ids(node["kwargs"]["body"])]
    return [str(node["options"]["task_id"])]


def plan(
    app: PlanningApp,
    node: Mapping[str, Any],
    prepend: Sequence[Any] = (),
    cont: Continuation | None = None,
    result_ttl_ms: int = 86_400_000,
    keys: type[Keys] = Keys,
) -> Plan:
    """The messages and commands that start a frozen ``node``; ``prepend``: arguments that go
    before a mutable first step's own (a parent's result). Raises as ``apply_async`` does
    (arguments, encoding) and ``UnsupportedCanvas``; nothing is sent."""
    out = Plan()
    _Planner(app, result_ttl_ms, out, keys).plan(node, tuple(prepend), cont or Continuation())
    return out


@dataclass(slots=True)
class _Planner:
    app: PlanningApp
    ttl_ms: int
    out: Plan
    keys: type[Keys] = Keys  # the app's keyspace (its key_prefix)

    def plan(self, node: Mapping[str, Any], prepend: tuple[Any, ...], cont: Continuation) -> None:
        kind_ = kind(node)
        if kind_ is None:
            self.out.items.append(build(self.app, node, prepend, cont))
        elif kind_ == "chain":
            tasks = node["kwargs"]["tasks"]
            self.plan(tasks[0], prepend, replace(cont, chain=[*tasks[1:], *cont.chain]))
        elif kind_ == "chord":
            self.chord(node["kwargs"]["header"], node["kwargs"]["body"], prepend, cont)
        elif cont.chain:  # a group with steps after it: a chord
            body = cont.chain[0] if len(cont.chain) == 1 else chain_node(cont.chain)
            self.chord(node, body, prepend, replace(cont, chain=[]))
        else:
            if cont.chord is not None or cont.results_from is not None:
                raise UnsupportedCanvas("a group as the last step of a chord member or as a chord body")
            members = node["kwargs"]["tasks"]
            for member in members:
                self.plan(member, prepend, Continuation(errbacks=cont.errbacks, parent=cont.parent))
            self.out.first += member_list(
                str(node["options"]["task_id"]), [result_id(m) for m in members], self.ttl_ms, self.keys
            )

    def chord(
        self, header: Mapping[str, Any], body: Mapping[str, Any], prepend: tuple[Any, ...], cont: Continuation
    ) -> None:
        members = header["kwargs"]["tasks"]
        chord_id = str(header["options"]["task_id"])
        if not members:  # Celery runs the body at once, with no results
            self.plan(body, ([],), cont)
            return
        first = body
        while kind(first) == "chain":
            first = first["kwargs"]["tasks"][0]
        if kind(first) is not None:
            raise UnsupportedCanvas("a chord body must start with a task (not a group or a chord)")
        delay_ms, body = _body_delay(body)
        sub = Plan()
        ref = {"id": chord_id, "n": len(members)}
        _Planner(self.app, self.ttl_ms, sub, self.keys).plan(body, ([],), replace(cont, results_from=ref))
        (message, encoded) = sub.items[0]
        key = self.keys.chord(message.queue, chord_id)
        self.out.first += [
            ("SADD", self.keys.QUEUES, message.queue),
            ("DEL", key),
            ("HSET", key, "n", len(members), "body", encoded, "delay", delay_ms, "p", message.priority),
            ("PEXPIRE", key, self.ttl_ms),
            *member_list(chord_id, [result_id(m) for m in members], self.ttl_ms, self.keys),
        ]
        membership = {"id": chord_id, "q": message.queue, "p": message.priority}
        for index, member in enumerate(members):
            self.plan(member, prepend, Continuation(chord={**membership, "i": index}, parent=cont.parent))


def _body_delay(body: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
    """A chord body's countdown (or eta, as a delay from now) counts from the chord's end: it
    goes to the chord's state, not to the stored message."""
    first_path: list[dict[str, Any]] = []
    node: Mapping[str, Any] = body
    while kind(node) == "chain":
        first_path.append(dict(node))
        node = node["kwargs"]["tasks"][0]
    options = dict(node.get("options") or {})
    countdown, eta = options.pop("countdown", None), options.pop("eta", None)
    if countdown is None and eta is None:
        return 0, body
    delay_s = float(countdown) if countdown is not None else max(0.0, float(eta) - time.time())
    replaced: Mapping[str, Any] = {**node, "options": options}
    for parent in reversed(first_path):
        replaced = {**parent, "kwargs": {"tasks": [replaced, *parent["kwargs"]["tasks"][1:]]}}
    return max(0, int(delay_s * 1000)), replaced


def member_list(
    group_id: str, ids: Sequence[str], ttl_ms: int, keys: type[Keys] = Keys
) -> list[tuple[Any, ...]]:
    """A group's member result ids (``GroupResult.restore``), with the result TTL."""
    key = keys.group(group_id)
    return [("DEL", key), ("RPUSH", key, *ids), ("PEXPIRE", key, max(1, ttl_ms))]


def send_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A signature's options as ``apply_async`` takes them: an ``expires`` kept as ISO text in
    the signature's JSON is a datetime again."""
    expires = options.get("expires")
    if isinstance(expires, str):
        return {**options, "expires": datetime.fromisoformat(expires)}
    return dict(options)


def build(
    app: PlanningApp, node: Mapping[str, Any], prepend: tuple[Any, ...], cont: Continuation
) -> tuple[Message, bytes]:
    """One task's message, its workflow links in the envelope field ``w``."""
    options = dict(node.get("options") or {})
    links, errbacks = options.pop("link", None), options.pop("link_error", None)
    immutable = bool(node.get("immutable"))
    args = tuple(node.get("args") or ()) if immutable else (*prepend, *(node.get("args") or ()))
    links_of: dict[str, Any] = {}
    if cont.chain:
        links_of["c"] = cont.chain
    if cont.chord is not None:
        links_of["ch"] = cont.chord
    if cont.results_from is not None:
        links_of["cr"] = {**cont.results_from, "r": int(not immutable)}
    if links:
        links_of["l"] = links
    if errbacks:
        links_of["le"] = errbacks
    if cont.errbacks:
        links_of["ie"] = cont.errbacks
    if cont.parent is not None:
        links_of["p"] = cont.parent
    options = send_options(options)
    if cont.headers:
        options["headers"] = cont.headers
    return app.build_message(node["task"], args, node.get("kwargs"), workflow=links_of or None, **options)
