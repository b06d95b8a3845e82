"""Canvas, producer side: signatures (a task call as plain JSON), ``group`` and ``GroupResult``.

A ``Signature`` is Celery-shaped and serialisable: built in one process, stored or sent as its
dict (``to_dict``), rebuilt anywhere with ``signature(dict, app=app)``. A ``group`` enqueues all
its members in one pipelined batch, together with its member list under ``Keys.group`` (TTL
``result_expires``), so ``GroupResult.restore(id, app=app)`` works from any process.
Chains, chords and ``link``/``link_error`` need the worker (issue 18) and raise
``NotYetSupported`` wherever their API exists. See docs/workflows.md.

Imports: exceptions, message, results; lazily the broker's key layout and ``redis``
(only when a group is sent). The app is reached through the ``TaskApp`` Protocol attributes
of a task or the ``app=`` given: never ``greenq.app`` (no import cycle), never the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from greenq.exceptions import GreenqError
from greenq.message import READY_STATES, SUCCESS, decode_result, new_id
from greenq.results import FAILURE, AsyncResult

# A ``GreenQ``; typed loosely because ``greenq.task`` imports this module (``add.s()``), and
# ``greenq.app`` imports ``greenq.task``: importing either here would be an import cycle.
GreenQ = Any

# The options a signature may carry (``sig.set(...)``), all passed on to ``apply_async``.
OPTIONS = ("queue", "priority", "countdown", "eta", "expires", "task_id")
LATER = "chains, chords and link/link_error come with the worker part of issue 18 (docs/workflows.md)"
GROUP_TASK = "greenq.group"


class NotYetSupported(GreenqError, NotImplementedError):
    """A canvas primitive greenq does not run yet (see "Not yet" in docs/workflows.md)."""


def _check_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The options as plain JSON: an ``eta`` datetime becomes epoch seconds, an ``expires``
    datetime an ISO string (a number there means seconds from the call)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("link", "link_error"):
            raise NotYetSupported(f"{where}: {key}= is not supported yet: {LATER}")
        if key not in OPTIONS:
            raise TypeError(f"{where}: unknown option {key!r}; signatures take {', '.join(OPTIONS)}")
        if key == "eta" and isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        elif key == "expires" and isinstance(value, datetime):
            value = value.isoformat()
        out[key] = value
    return out


def _send_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as ``apply_async`` takes them (an ISO ``expires`` back to a datetime)."""
    expires = options.get("expires")
    if isinstance(expires, str):
        return {**options, "expires": datetime.fromisoformat(expires)}
    return dict(options)


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

    def __or__(self, other: object) -> Any:
        raise NotYetSupported(f"{self!r} | {other!r}: {LATER}")

    def __ror__(self, other: object) -> Any:
        raise NotYetSupported(f"{other!r} | {self!r}: {LATER}")

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
        """A copy with these options (queue, priority, countdown, eta, expires, task_id)."""
        return Signature(
            self.task, self.args, self.kwargs, {**self.options, **options}, self.immutable, self.app
        )

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

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Enqueue the call; ``args`` go before the signature's own (ignored when immutable),
        ``kwargs`` and ``options`` update its own."""
        args, kwargs, merged = self._merge(args, kwargs, options)
        return self._app().send_task(self.task, args, kwargs, **_send_options(merged))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
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
            varies = varies.clone()
            varies.app = app
        return varies
    if isinstance(varies, Mapping):
        kind = varies.get("subtask_type")
        if kind == "group":
            members = varies.get("kwargs", {}).get("tasks", [])
            return group([signature(m, app=app) for m in members], app=app, **varies.get("options", {}))
        if kind is not None:
            raise NotYetSupported(f"signature of type {kind!r}: {LATER}")
        return Signature(
            varies["task"],
            varies.get("args"),
            varies.get("kwargs"),
            varies.get("options"),
            bool(varies.get("immutable", False)),
            app,
        )
    return Signature(varies, args, kwargs, options, False, app)


class group(Signature):  # Celery's name
    """Run signatures in parallel: ``group(add.s(1, 1), add.s(2, 2))`` or ``group(generator)``.

    Applying it (``group(...)()``, ``.delay()``, ``.apply_async()``) validates and encodes every
    member first (a bad one sends nothing), then enqueues them all pipelined (5,000 per round
    trip) together with the group's member list, and returns a ``GroupResult``.
    """

    subtask_type = "group"

    def __init__(self, *tasks: Any, app: GreenQ | None = None, **options: Any) -> None:
        items: Iterable[Any] = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Signature | Mapping):
            items = tasks[0]  # one iterable or generator of signatures
        members = [signature(t, app=app) for t in items]
        for member in members:
            if isinstance(member, group):
                raise NotYetSupported(f"a group inside a group is not supported yet: {LATER}")
        super().__init__(GROUP_TASK, (), {}, options, False, app)
        self.tasks = members
        if self.app is None:
            self.app = next((m.app for m in members if m.app is not None), None)

    def __repr__(self) -> str:
        return f"group({self.tasks!r})"

    def __iter__(self) -> Iterator[Signature]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kwargs": {"tasks": [t.to_dict() for t in self.tasks]}}

    def set(self, **options: Any) -> group:
        return group(self.tasks, app=self.app, **{**self.options, **options})

    def clone(self, args: Any = None, kwargs: Any = None, **options: Any) -> group:
        return group([t.clone(args, kwargs) for t in self.tasks], app=self.app, **{**self.options, **options})

    def apply_async(  # type: ignore[override]
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Enqueue every member (partial ``args``/``kwargs`` and ``options`` apply to each)."""
        if not self.tasks:
            return GroupResult(new_id(), [], app=self.app)  # nothing to send, no member list
        app = self._app()
        common = {**self.options, **_check_options(options, "group")}
        if "task_id" in common:
            raise TypeError("group: task_id would give every member the same id")
        items = []
        for member in self.tasks:
            margs, mkwargs, merged = member._merge(args, kwargs, common)
            items.append(app.build_message(member.task, margs, mkwargs, **_send_options(merged)))
        group_id = new_id()
        ids = send_group(app, group_id, items)
        return GroupResult(group_id, [AsyncResult(i, app=app) for i in ids], app=app)

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:  # type: ignore[override]
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


def send_group(app: GreenQ, group_id: str, items: Sequence[Any]) -> list[str]:
    """Enqueue built messages and store the group's member ids (an RPUSH + PEXPIRE in the first
    pipeline). A unique member whose key another task holds stands for that task: the list is
    then written after the members, when those ids are known."""
    from greenq.broker.keys import Keys

    if not items:
        return []  # an empty group: nothing to send, no member list
    key, ttl_ms = Keys.group(group_id), max(1, int(app.conf.result_expires * 1000))

    def member_list(ids: Sequence[str]) -> list[tuple[Any, ...]]:
        return [("DEL", key), ("RPUSH", key, *ids), ("PEXPIRE", key, ttl_ms)]

    if not any(message.unique is not None for message, _ in items):
        return app.broker.enqueue(items, first=member_list([message.id for message, _ in items]))
    ids = app.broker.enqueue(items)
    app.broker.conns.execute(member_list(ids))
    return ids


class GroupResult:
    """The results of a group's members, in member order. Reads pipeline all members' states
    in one round trip; ``get()`` then waits in Redis (``XREAD BLOCK``) only on those not ready."""

    def __init__(self, id: str, results: Sequence[AsyncResult], app: GreenQ | None = None) -> None:
        self.id = id
        self.results = list(results)
        self.app: GreenQ = app if app is not None else (results[0].app if results else None)

    def __repr__(self) -> str:
        return f"<GroupResult {self.id} [{len(self.results)} results]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and (other.id, other.results) == (self.id, self.results)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def restore(cls, group_id: str, app: GreenQ) -> GroupResult | None:
        """The group's result from its stored member list; None if unknown or expired."""
        from greenq.broker.keys import Keys

        ids = app.broker.conns.call("LRANGE", Keys.group(group_id), 0, -1)
        if not ids:
            return None
        return cls(group_id, [AsyncResult(i.decode(), app=app) for i in ids], app=app)

    def forget(self) -> None:
        """Delete the member list and every member's result now."""
        from greenq.broker.keys import Keys

        if self.app is not None:
            self.app.broker.conns.execute(
                [("DEL", Keys.group(self.id)), *(("DEL", Keys.result(r.id)) for r in self.results)]
            )

    def _records(self) -> list[dict[str, Any] | None]:
        """Each member's latest state record (None: PENDING), in one pipelined round trip."""
        from greenq.broker.keys import Keys
        from greenq.broker.stack import field

        if not self.results or self.app is None:
            return []
        commands = [("XREVRANGE", Keys.result(r.id), "+", "-", "COUNT", 1) for r in self.results]
        replies = self.app.broker.conns.execute(commands)
        return [decode_result(field(entries[0][1], b"r")) if entries else None for entries in replies]

    def _states(self) -> list[str | None]:
        return [record["state"] if record else None for record in self._records()]

    def ready(self) -> bool:
        """Every member is in a ready state (SUCCESS, FAILURE, REVOKED)."""
        return all(state in READY_STATES for state in self._states())

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded (Celery counts only SUCCESS)."""
        return sum(state == SUCCESS for state in self._states())

    def successful(self) -> bool:
        return all(state == SUCCESS for state in self._states())

    def failed(self) -> bool:
        """At least one member failed."""
        return any(state == FAILURE for state in self._states())

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's return value, in member order.

        Raises:
            ResultTimeout: not every member was ready within ``timeout`` seconds (in total).
            TaskError: with ``propagate``, the first failed member (in member order) raises its
                error, as Celery's ``join`` does; without, its error is in the list.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result, record in zip(self.results, self._records(), strict=True):
            if record is not None and record["state"] == SUCCESS:
                values.append(record.get("result"))
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if record is not None and record["state"] in READY_STATES:
                left = None  # already written: get() reads it at once (and raises its error)
            values.append(result.get(timeout=left, propagate=propagate))
        return values

    join = get
