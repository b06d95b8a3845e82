"""GroupResult: the results of a group's members, in member order (``greenq.canvas``).

Reads pipeline every member's latest state in one round trip; ``get()`` then waits in Redis
(``XREAD BLOCK``) only on members not yet ready. ``restore`` rebuilds one from the member list
the group wrote under ``Keys.group`` (TTL ``result_expires``), in any process.
Imports: message, results; lazily the broker's key layout. Never the app (duck-typed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from greenq.message import FAILURE, READY_STATES, SUCCESS, decode_result
from greenq.results import AsyncResult

GreenQ = Any  # a ``GreenQ`` (duck-typed: importing greenq.app here would be an import cycle)


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
        ids = app.broker.conns.call("LRANGE", app.broker.keys.group(group_id), 0, -1)
        if not ids:
            return None
        return cls(group_id, [AsyncResult(i.decode(), app=app) for i in ids], app=app)

    def forget(self) -> None:
        """Delete the member list and every member's result now."""
        if self.app is not None:
            keys = self.app.broker.keys
            self.app.broker.conns.execute(
                [("DEL", keys.group(self.id)), *(("DEL", keys.result(r.id)) for r in self.results)]
            )

    def _records(self) -> list[dict[str, Any] | None]:
        """Each member's latest state record (None: PENDING), in one pipelined round trip."""
        from greenq.broker.stack import field

        if not self.results or self.app is None:
            return []
        keys = self.app.broker.keys
        commands = [("XREVRANGE", keys.result(r.id), "+", "-", "COUNT", 1) for r in self.results]
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
