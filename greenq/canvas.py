"""Canvas, producer side: signatures (a task call as plain JSON), ``chain``, ``group``, ``chord``.

A ``Signature`` is Celery-shaped and serialisable: built in one process, stored or sent as its
dict (``to_dict``), rebuilt anywhere with ``signature(dict, app=app)``. Applying any of them
freezes the tree (every task id assigned, so every result is known at once), plans it
(``greenq.workflow``: the same code the worker uses for a chain's next step) and sends it in
pipelined round trips, the chord state and group member lists in the first. The worker runs
what follows: docs/workflows.md.

Imports: exceptions, message, results, group_result, workflow. The app is reached through the
``app`` attribute of a task or the ``app=`` given: never ``greenq.app`` (no import cycle).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from greenq.canvas_send import apply_node, send_group
from greenq.exceptions import GreenqError
from greenq.group_result import GroupResult
from greenq.message import new_id
from greenq.results import AsyncResult
from greenq.workflow import CHAIN_TASK, CHORD_TASK, GROUP_TASK, UnsupportedCanvas, freeze, kind, send_options

__all__ = ["GroupResult", "Signature", "UnsupportedCanvas", "chain", "chord", "group", "signature"]

# A ``GreenQ``; typed loosely because ``greenq.task`` imports this module (``add.s()``), and
# ``greenq.app`` imports ``greenq.task``: importing either here would be an import cycle.
GreenQ = Any

# The options a signature may carry (``sig.set(...)``), all passed on to ``apply_async``.
OPTIONS = ("queue", "priority", "countdown", "eta", "expires", "task_id", "link", "link_error")


def _check_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options as plain JSON: an ``eta`` datetime becomes epoch seconds, an ``expires``
    datetime an ISO string (a number there means seconds from the call), callbacks dicts."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise TypeError(f"{where}: unknown option {key!r}; signatures take {', '.join(OPTIONS)}")
        if key in ("link", "link_error"):
            value = [
                _as_dict(v, f"{where}: {key}=")
                for v in (value if isinstance(value, list | tuple) else [value])
            ]
        elif key == "eta" and isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        elif key == "expires" and isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


def _as_dict(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, Signature):
        return value.to_dict()
    if isinstance(value, Mapping) and "task" in value:
        return dict(value)
    raise TypeError(f"{where} takes signatures (task.s(...)), got {type(value).__name__}")


class Signature:
    """One task call, not sent yet: task name, arguments and options.

    ``add.s(2)`` is mutable: ``delay(x)`` puts ``x`` before its own arguments, as Celery does
    (the slot a chain fills with the parent's result). ``add.si(2, 3)`` is immutable: extra
    arguments given when it is sent are ignored.
    """

    subtask_type: str | None = None

    def __init__(
        self,
        task: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        app: GreenQ | None = None,
    ) -> None:
        if isinstance(task, str):
            self.task: str = task
        elif isinstance(getattr(task, "name", None), str) and hasattr(task, "app"):  # a Task
            self.task = task.name
            app = app if app is not None else task.app
        else:
            raise TypeError(f"a signature needs a Task or a task name, got {type(task).__name__}")
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.options = _check_options(options or {}, f"signature of {self.task}")
        self.immutable = bool(immutable)
        self.app = app

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}{'!' if self.immutable else ''}({call})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and other.to_dict() == self.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like Celery's (a dict)

    def __or__(self, other: object) -> chain:
        """``a.s() | b.s()`` is ``chain(a.s(), b.s())``."""
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other, app=self.app if self.app is not None else other.app)

    def to_dict(self) -> dict[str, Any]:
        """Celery's dict form, plain JSON: ``json.dumps(sig.to_dict())`` works."""
        return {
            "task": self.task,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "options": dict(self.options),
            "immutable": self.immutable,
            "subtask_type": self.subtask_type,
        }

    def clone(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with the partial arguments merged (as ``apply_async`` would) and the options."""
        args, kwargs, merged = self._merge(args, kwargs, options)
        return Signature(self.task, args, kwargs, merged, self.immutable, self.app)

    def set(self, **options: Any) -> Signature:
        """A copy with these options (queue, priority, countdown, eta, expires, task_id, link...)."""
        copy = signature(self.to_dict(), app=self.app)
        copy.options = {**self.options, **_check_options(options, f"signature of {self.task}")}
        return copy

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result when it succeeds (Celery's ``link``)."""
        self.options["link"] = [*self.options.get("link", []), _as_dict(callback, "link")]
        return callback

    def on_error(self, errback: Signature) -> Signature:
        """Run ``errback(task_id, error)`` once if this task fails (Celery's ``link_error``)."""
        self.options["link_error"] = [*self.options.get("link_error", []), _as_dict(errback, "link_error")]
        return self

    link_error = on_error

    def _merge(
        self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        merged = {**self.options, **_check_options(options, f"signature of {self.task}")}
        if self.immutable:
            return self.args, self.kwargs, merged
        return (*(args or ()), *self.args), {**self.kwargs, **(kwargs or {})}, merged

    def _app(self) -> GreenQ:
        if self.app is None:
            raise GreenqError(
                f"signature of {self.task} has no app: build it from a task or pass app= "
                "(greenq.signature(d, app=app))"
            )
        return self.app

    def freeze(self) -> Signature:
        """Assign every task id now (kept when it is sent), so ``apply_async`` returns results
        with these ids; returns the signature (frozen in place)."""
        frozen = freeze(self.to_dict())
        self.options = frozen["options"]
        return self

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Enqueue the call; ``args`` go before the signature's own (ignored when immutable),
        ``kwargs`` and ``options`` update its own. Returns an ``AsyncResult``."""
        args, kwargs, merged = self._merge(args, kwargs, options)
        if "link" not in merged and "link_error" not in merged:
            return self._app().send_task(self.task, args, kwargs, **send_options(merged))
        node = {**self.to_dict(), "args": list(args), "kwargs": kwargs, "options": merged, "immutable": True}
        return apply_node(self._app(), node)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, in this process (as Celery does), with the merged arguments."""
        args, kwargs, _ = self._merge(args, kwargs, {})
        return self._app().tasks[self.task](*args, **kwargs)


def signature(
    varies: Any,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    app: GreenQ | None = None,
    **options: Any,
) -> Signature:
    """A signature from its dict (``sig.to_dict()``, also after a JSON round trip), a copy of
    one, or a task (name) with arguments and options."""
    if isinstance(varies, Signature):
        if app is not None and varies.app is None:
            varies = signature(varies.to_dict(), app=app)
        return varies
    if isinstance(varies, Mapping):
        kind_ = kind(varies)
        opts = dict(varies.get("options") or {})
        if kind_ in ("group", "chain"):
            tasks = [signature(t, app=app) for t in varies.get("kwargs", {}).get("tasks", [])]
            return (group if kind_ == "group" else chain)(tasks, app=app, **opts)
        if kind_ == "chord":
            parts = varies["kwargs"]
            header = signature(parts["header"], app=app)
            return chord(header, signature(parts["body"], app=app), app=app, **opts)
        if kind_ is not None:
            raise UnsupportedCanvas(f"unknown canvas type {kind_!r}")
        return Signature(
            varies["task"],
            varies.get("args"),
            varies.get("kwargs"),
            opts,
            bool(varies.get("immutable", False)),
            app,
        )
    return Signature(varies, args, kwargs, options, False, app)


class _Composite(Signature):
    """What chain, group and chord share: member signatures, an app found among them."""

    def __init__(
        self, task: str, members: list[Signature], app: GreenQ | None, options: Mapping[str, Any]
    ) -> None:
        super().__init__(task, (), {}, options, False, app)
        self.tasks = members
        if self.app is None:
            self.app = next((m.app for m in members if m.app is not None), None)

    def __iter__(self) -> Iterator[Signature]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kwargs": {"tasks": [t.to_dict() for t in self.tasks]}}

    def set(self, **options: Any) -> Any:
        return signature({**self.to_dict(), "options": {**self.options, **options}}, app=self.app)

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if args or kwargs:
            raise TypeError(
                f"{type(self).__name__}.clone() takes options only; give arguments when it is applied"
            )
        return self.set(**options)

    def freeze(self) -> Signature:
        raise TypeError(f"{type(self).__name__}: apply it; the returned result carries every id")

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        node = self.to_dict()
        node["options"] = {**node["options"], **_check_options(options, type(self).__name__)}
        return apply_node(self._app(), node, tuple(args or ()), dict(kwargs or {}))

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


def _members(tasks: tuple[Any, ...], app: GreenQ | None) -> list[Signature]:
    items: Iterable[Any] = tasks
    if len(tasks) == 1 and not isinstance(tasks[0], Signature | Mapping):
        items = tasks[0]  # one iterable or generator of signatures
    return [signature(t, app=app) for t in items]


class chain(_Composite):  # Celery's name
    """Run signatures one after another, each getting the previous one's result first:
    ``chain(a.s(1), b.s(), c.s())`` or ``a.s(1) | b.s() | c.s()``. Applying it returns the last
    step's ``AsyncResult`` (``.parent`` walks back). Each next step is enqueued by the worker
    that finished the one before, in the round trip that writes that step's result."""

    subtask_type = "chain"

    def __init__(self, *tasks: Any, app: GreenQ | None = None, **options: Any) -> None:
        members = _members(tasks, app)
        if not members:
            raise UnsupportedCanvas("an empty chain has nothing to run")
        super().__init__(CHAIN_TASK, members, app, options)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: object) -> chain:
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, app=self.app, **self.options)


class group(_Composite):  # Celery's name
    """Run signatures in parallel: ``group(add.s(1, 1), add.s(2, 2))`` or ``group(generator)``.

    Applying it validates and encodes every member first (a bad one sends nothing), then
    enqueues them all pipelined (5,000 per round trip) together with the group's member list,
    and returns a ``GroupResult``. ``task_id=`` sets the group's id.
    """

    subtask_type = "group"

    def __init__(self, *tasks: Any, app: GreenQ | None = None, **options: Any) -> None:
        members = _members(tasks, app)
        for member in members:
            if isinstance(member, group):
                raise UnsupportedCanvas("a group inside a group: flatten it (group(a, b, c)) or chain it")
        super().__init__(GROUP_TASK, members, app, options)

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Enqueue every member (partial ``args``/``kwargs`` and ``options`` apply to each)."""
        if not self.tasks:
            return GroupResult(str(options.get("task_id") or new_id()), [], app=self.app)
        if any(
            type(m) is not Signature or "link" in m.options or "link_error" in m.options for m in self.tasks
        ):
            result: GroupResult = super().apply_async(args, kwargs, **options)
            return result
        return self._send_plain(args, kwargs, options)

    def _send_plain(
        self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> GroupResult:
        """Plain task members: built straight, so that unique members work as in ``Task.map``."""
        app = self._app()
        common = {**self.options, **_check_options(options, "group")}
        group_id = str(common.pop("task_id", None) or new_id())
        items = []
        for member in self.tasks:
            margs, mkwargs, merged = member._merge(args, kwargs, common)
            items.append(app.build_message(member.task, margs, mkwargs, **send_options(merged)))
        ids = send_group(app, group_id, items)
        return GroupResult(group_id, [AsyncResult(i, app=app) for i in ids], app=app)


class chord(_Composite):  # Celery's name
    """A group (the header) whose results, in member order, go to one more task (the body)
    once every member has finished: ``chord(header)(body)`` or ``chord(header, body)()``.

    The body runs exactly once: each member's worker counts it in Redis in the round trip that
    writes its result (``chord.lua``), and the last one enqueues the body in that same script.
    A failed member fails the chord (the body does not run; its result is a ``ChordError``).
    """

    subtask_type = "chord"

    def __init__(
        self,
        header: Any,
        body: Signature | Mapping[str, Any] | None = None,
        app: GreenQ | None = None,
        **options: Any,
    ) -> None:
        self.header = header if isinstance(header, group) else group(header, app=app)
        self.body = signature(body, app=app) if body is not None else None
        super().__init__(CHORD_TASK, self.header.tasks, app if app is not None else self.header.app, options)
        if self.app is None and self.body is not None:
            self.app = self.body.app

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def to_dict(self) -> dict[str, Any]:
        base = Signature.to_dict(self)
        body = self.body.to_dict() if self.body is not None else None
        return {**base, "kwargs": {"header": self.header.to_dict(), "body": body}}

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(body)`` applies with that body; ``chord(header, body)()`` with its own."""
        if isinstance(body, Signature | Mapping):
            return chord(self.header, body, app=self.app, **self.options).apply_async(**options)
        return self.apply_async(**options)

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        if self.body is None:
            raise TypeError("chord(header) needs a body: chord(header)(body) or chord(header, body)")
        return super().apply_async(args, kwargs, **options)
