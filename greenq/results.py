"""AsyncResult: a task's state and result, read from its result stream in Redis.

Owns waiting for a result: ``get()`` blocks inside Redis (XREAD BLOCK on the task's result
stream) and is woken by the worker's write; it never sleeps and polls. ``await aget()`` waits
the same way on the app's asyncio transport (``greenq.aio``). The record format and the state
names belong to ``greenq.message`` (re-exported here: ``from greenq.results import SUCCESS``).
Imports: message, exceptions. The broker is reached through the app passed in, typed by the
``ResultApp`` Protocol below, so this module never imports ``greenq.app`` (no import cycle).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from greenq.exceptions import ResultTimeout, TaskError, TaskRevoked
from greenq.message import (
    FAILURE,
    PENDING,
    READY_STATES,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    decode_result,
    result_payload,
)

_BUILTIN_STATES = frozenset({PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED})

__all__ = [
    "FAILURE",
    "PENDING",
    "READY_STATES",
    "RETRY",
    "REVOKED",
    "STARTED",
    "SUCCESS",
    "AsyncResult",
    "ResultApp",
    "decode_result",
    "result_payload",
]


class ResultStore(Protocol):
    """The broker calls a result handle makes (``greenq.broker.redis.RedisBroker``)."""

    def read_result(self, task_id: str) -> bytes | None: ...

    def wait_result(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> tuple[str, bytes] | None: ...

    def forget(self, task_id: str) -> None: ...

    def store_progress(self, task_id: str, payload: bytes) -> bool: ...

    def wait_entries(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> list[tuple[str, bytes]]: ...


class AsyncResultStore(Protocol):
    """The asyncio transport's wait (``greenq.aio.AsyncRedisBroker``)."""

    async def wait_result(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> tuple[str, bytes] | None: ...

    async def wait_entries(
        self, task_id: str, timeout_s: float | None, after: str = "0-0"
    ) -> list[tuple[str, bytes]]: ...


class ResultApp(Protocol):
    """What an AsyncResult needs of its app: a ``GreenQ`` satisfies it."""

    @property
    def broker(self) -> ResultStore: ...

    @property
    def async_broker(self) -> AsyncResultStore: ...


class AsyncResult:
    """A handle on one task's outcome.

    ``state`` is PENDING until a worker writes something (also when the id is unknown or the
    result expired), then STARTED (with ``task_track_started``), RETRY, and one of the ready
    states SUCCESS, FAILURE, REVOKED.
    """

    def __init__(self, id: str, app: ResultApp | None = None) -> None:
        if app is None:
            raise TypeError("AsyncResult needs the app: AsyncResult(id, app=app) or app.AsyncResult(id)")
        self.id = id
        self.app = app
        self._record: dict[str, Any] | None = None
        # The step before this one in a chain (set by the canvas; else read from the record).
        self._parent: AsyncResult | Any | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _refresh(self) -> dict[str, Any] | None:
        if self._record is not None and self._record["state"] in READY_STATES:
            return self._record
        payload = self.app.broker.read_result(self.id)
        self._record = decode_result(payload) if payload is not None else None
        return self._record

    @property
    def info(self) -> dict[str, Any]:
        """The whole state record (empty while PENDING); for a custom state written with
        ``update_state`` (``PROGRESS``...), its ``meta``, as in Celery."""
        record = self._refresh() or {}
        if "meta" in record and record["state"] not in _BUILTIN_STATES:
            return dict(record["meta"] or {})
        return dict(record)

    def _field(self, name: str) -> Any:
        record = self._refresh()
        return record.get(name) if record else None

    name = property(lambda self: self._field("task"), doc="The task's name (once a worker wrote a state).")
    args = property(lambda self: self._field("args"), doc="Its arguments (``result_extended``).")
    kwargs = property(lambda self: self._field("kwargs"), doc="Its keyword arguments (``result_extended``).")
    queue = property(lambda self: self._field("queue"), doc="Its queue (``result_extended``).")
    worker = property(lambda self: self._field("worker"), doc="The worker that wrote the state.")
    retries = property(lambda self: self._field("retries"), doc="Retries so far.")
    date_done = property(lambda self: self._field("date_done"), doc="When the state was written (epoch s).")
    date_started = property(
        lambda self: self._field("date_started"), doc="When it started (``result_extended``)."
    )

    @property
    def parent(self) -> AsyncResult | Any | None:
        """The chain step (or chord header's ``GroupResult``) before this one, if known."""
        if self._parent is None:
            parent_id = self._field("parent")
            if parent_id:
                self._parent = AsyncResult(parent_id, app=self.app)
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult | Any | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult]:
        """The tasks this one started when it finished (a chain's next step, ``link`` callbacks)."""
        return [AsyncResult(i, app=self.app) for i in self._field("children") or ()]

    def iter_updates(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Each state record as the worker writes it (``update_state`` progress, STARTED, RETRY,
        then the final one, which ends the iteration); waits in Redis, no polling.

        Raises:
            ResultTimeout: no new record within ``timeout`` seconds of the previous one.
        """
        after = "0-0"
        while True:
            entries = self.app.broker.wait_entries(self.id, timeout, after=after)
            records = self._updates(entries, timeout)
            yield from records
            if self._record is records[-1]:
                return
            after = entries[-1][0]

    async def aiter_updates(self, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """``iter_updates`` for asyncio code, awaited on ``redis.asyncio``."""
        after = "0-0"
        broker = self.app.async_broker
        while True:
            entries = await broker.wait_entries(self.id, timeout, after=after)
            records = self._updates(entries, timeout)
            for record in records:
                yield record
            if self._record is records[-1]:
                return
            after = entries[-1][0]

    def _updates(self, entries: list[tuple[str, bytes]], timeout: float | None) -> list[dict[str, Any]]:
        """The records of one read, up to and including a final one (kept as ``_record``)."""
        if not entries:
            raise ResultTimeout(f"task {self.id}: no update within {timeout}s")
        records = []
        for _, payload in entries:
            records.append(decode_result(payload))
            if records[-1]["state"] in READY_STATES:
                self._record = records[-1]
                break
        return records

    @property
    def state(self) -> str:
        record = self._refresh()
        return record["state"] if record else PENDING

    status = state

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    @property
    def result(self) -> Any:
        """The return value on SUCCESS; a TaskError describing the exception on FAILURE."""
        record = self._refresh()
        if not record:
            return None
        if record["state"] == SUCCESS:
            return record.get("result")
        if record.get("exc_type"):
            return self._error(record)
        return None

    @property
    def traceback(self) -> str | None:
        record = self._refresh()
        return record.get("traceback") if record else None

    def _error(self, record: dict[str, Any]) -> TaskError:
        cls = TaskRevoked if record["state"] == REVOKED else TaskError
        return cls(
            self.id,
            record.get("exc_type") or record["state"],
            record.get("exc_message") or "",
            record.get("traceback"),
        )

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for a ready state and return the task's return value.

        Args:
            timeout: seconds to wait; None waits for ever.
            propagate: on FAILURE or REVOKED, raise ``TaskError``/``TaskRevoked`` (default)
                or return it.

        Raises:
            ResultTimeout: (a ``TimeoutError``) the task was not ready in time; names the id.
            TaskError: the task failed; holds exception type, message and traceback.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        after = "0-0"
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            found = self.app.broker.wait_result(self.id, left, after=after)
            if found is None:
                raise ResultTimeout(f"task {self.id} not ready after {timeout}s")
            after, payload = found
            ready, value = self._settle(payload, propagate)
            if ready:
                return value

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """``get()`` for asyncio code: the XREAD BLOCK is awaited on ``redis.asyncio``, so the
        event loop runs on while the task does. Same arguments, return value and errors
        (``ResultTimeout`` naming the id, ``TaskError`` on FAILURE); cancelling the awaiting
        task stops the wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = "0-0"
        broker = self.app.async_broker
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            found = await broker.wait_result(self.id, left, after=after)
            if found is None:
                raise ResultTimeout(f"task {self.id} not ready after {timeout}s")
            after, payload = found
            ready, value = self._settle(payload, propagate)
            if ready:
                return value

    def _settle(self, payload: bytes, propagate: bool) -> tuple[bool, Any]:
        """(ready?, what get() returns) for one state record; raises the task's error if asked."""
        record = decode_result(payload)
        if record["state"] not in READY_STATES:
            return False, None
        self._record = record
        if record["state"] == SUCCESS:
            return True, record.get("result")
        error = self._error(record)
        if propagate:
            raise error
        return True, error

    def forget(self) -> None:
        """Delete the stored result now instead of waiting for ``result_expires``."""
        self.app.broker.forget(self.id)
        self._record = None
