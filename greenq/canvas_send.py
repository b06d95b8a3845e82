"""Sending a canvas tree: freeze it (every id assigned), plan it (``greenq.workflow``), enqueue
the plan in pipelined round trips (its chord state and member lists in the first), send
``after_task_publish`` for what was written, and build the result handles (``AsyncResult`` with
``.parent`` through a chain, ``GroupResult``).

Works on the trees' dict form, so ``greenq.canvas`` (the classes) imports this and not the
other way round. Imports: results, group_result, signals, workflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from greenq import signals
from greenq.group_result import GroupResult
from greenq.results import AsyncResult
from greenq.workflow import Continuation, UnsupportedCanvas, freeze, kind, member_list, plan, result_id

GreenQ = Any  # a ``GreenQ`` (duck-typed: no import of greenq.app)


def apply_node(
    app: GreenQ, node: dict[str, Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
) -> Any:
    """Freeze, plan and send a canvas tree; the result object of its kind."""
    options = dict(node.get("options") or {})
    links = options.pop("link", [])
    errbacks = options.pop("link_error", [])
    node = {**node, "options": options}
    kind_ = kind(node)
    if kind_ == "chain" and (links or errbacks or kwargs):
        tasks = list(node["kwargs"]["tasks"])
        if links:  # the chain's callbacks go to its last step, its errbacks to every step
            last = tasks[-1]
            tasks[-1] = {
                **last,
                "options": {
                    **last.get("options", {}),
                    "link": [*last.get("options", {}).get("link", []), *links],
                },
            }
        node = {**node, "kwargs": {"tasks": tasks}}
    elif kind_ is not None and links:
        raise UnsupportedCanvas(f"link= on a {kind_}: put the callback after it in a chain")
    elif kind_ is None:
        node["options"] = {
            **options,
            **({"link": links} if links else {}),
            **({"link_error": errbacks} if errbacks else {}),
        }
        errbacks = []
    frozen = freeze(node)
    ttl_ms = max(1, int(app.conf.result_expires * 1000))
    prepend = args if kind(frozen) is not None else ()
    if kwargs and kind(frozen) is not None:
        raise TypeError(f"{kind(frozen)}: keyword arguments go to its signatures, not to apply_async")
    built = plan(
        app, frozen, prepend, Continuation(errbacks=errbacks), result_ttl_ms=ttl_ms, keys=app.broker.keys
    )
    ids = app.broker.enqueue(built.items, first=built.first)
    if signals.after_task_publish.receivers:
        signals.published(built.items, ids)
    return result_of(app, frozen)


def result_of(app: GreenQ, node: Mapping[str, Any], parent: AsyncResult | GroupResult | None = None) -> Any:
    """The result handle of a frozen tree: a task's or chain's ``AsyncResult`` (with ``.parent``
    back through the chain), a group's ``GroupResult``, a chord's body's result."""
    kind_ = kind(node)
    if kind_ == "chain":
        result = parent
        for step in node["kwargs"]["tasks"]:
            result = result_of(app, step, result)
        return result
    if kind_ == "group":
        members = [result_of(app, m) for m in node["kwargs"]["tasks"]]
        return GroupResult(str(node["options"]["task_id"]), members, app=app)
    if kind_ == "chord":
        header = result_of(app, node["kwargs"]["header"], parent)
        return result_of(app, node["kwargs"]["body"], header)
    result = AsyncResult(result_id(node), app=app)
    result.parent = parent
    return result


def send_group(app: GreenQ, group_id: str, items: Sequence[Any]) -> list[str]:
    """Enqueue built messages and store the group's member ids (an RPUSH + PEXPIRE in the first
    pipeline). A unique member whose key another task holds stands for that task: the list is
    then written after the members, when those ids are known."""
    if not items:
        return []
    ttl_ms = max(1, int(app.conf.result_expires * 1000))
    if not any(message.unique is not None for message, _ in items):
        members = member_list(group_id, [m.id for m, _ in items], ttl_ms, app.broker.keys)
        ids = list(app.broker.enqueue(items, first=members))
    else:
        ids = list(app.broker.enqueue(items))
        app.broker.conns.execute(member_list(group_id, ids, ttl_ms, app.broker.keys))
    if signals.after_task_publish.receivers:
        signals.published(items, ids)
    return ids
