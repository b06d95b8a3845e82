"""The wire formats: the versioned JSON envelope of one task call, the result record and the
task states it carries, and their orjson codecs.

Owns everything a producer or a worker writes into Redis as JSON (documented field by field in
docs/protocol.md) and the argument rule: a value JSON cannot carry as it is (``NaN``, a UUID, a
``datetime``, an int beyond 64 bits, a dict with non-string keys...) fails here, at enqueue,
naming where it is and how to send it instead, before anything reaches Redis. JSON only, never
pickle. Imports: exceptions, orjson; nothing else from greenq, so every layer may import it.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import hmac
import math
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from greenq.exceptions import DecodeError, EncodeError, MessageTooLarge

PROTOCOL_VERSION = 1
PRIORITY_MIN = 0
PRIORITY_MAX = 9
# Strict JSON: datetimes and dataclasses would arrive as strings/dicts, so refuse them instead.
_DUMP_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SIG_FIELD = b',"sig":"'
# The integers orjson encodes: signed and unsigned 64-bit.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# orjson writes NaN/inf as null and a UUID as its text, silently: a body with more nulls than the
# envelope's own, or with the middle of a UUID's text, is scanned for them (see _check_lossless).
_UUID_MIDDLE = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-")
# What to send instead of a value greenq refuses, by type (checked with isinstance, in order).
_HINTS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    ((datetime.date, datetime.time), "pass .isoformat()"),  # datetime is a date
    (decimal.Decimal, "pass str() or float()"),
    (uuid.UUID, "pass str()"),
    ((set, frozenset), "pass a list"),
    ((bytes, bytearray, memoryview), "pass base64 text, or a reference (key, URL)"),
)

# Task states, as result records carry them (docs/protocol.md, "States").
PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED = (
    "PENDING",
    "STARTED",
    "RETRY",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
)
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


def new_id() -> str:
    """A fresh task id: 128 random bits as 32 hex characters (the shape of a uuid4 hex, at a
    quarter of ``uuid.uuid4()``'s cost; nothing parses ids as UUIDs)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class Message:
    """One task call as it travels through Redis.

    Treated as immutable: change it with ``with_changes``. Not ``frozen``: a frozen dataclass is
    measurably slower to build, on every enqueue and every delivery.
    Times are Unix epoch seconds (float). ``eta`` None means run now; ``expires`` None means
    never expires. ``retries`` counts ``self.retry()`` calls so far.
    """

    id: str
    task: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    created: float = 0.0
    # Unique enqueue (docs/semantics.md): the unique key this message holds (envelope field
    # ``u``; None: not unique), and the key's TTL in ms, which the producer needs for the
    # enqueue script only and which is not in the envelope.
    unique: str | None = None
    unique_ttl_ms: int = 0
    # Workflow links (envelope field ``w``; docs/workflows.md): the rest of a chain, chord
    # membership, callbacks. None for a plain task: the hot path checks only that.
    workflow: dict[str, Any] | None = None
    # Headers (envelope field ``headers``; None: none): ``traceparent``, the W3C trace context of
    # the enqueue's span (greenq.tracing), and what ``before_task_publish`` receivers added. A
    # retry keeps them; a workflow's next step copies them.
    headers: dict[str, Any] | None = None

    def with_changes(self, **changes: Any) -> Message:
        """A copy with some fields changed (retries, eta, queue...)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "id": self.id,
            "task": self.task,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
            "created": self.created,
        }
        if self.unique is not None:
            envelope["u"] = self.unique
        if self.workflow is not None:
            envelope["w"] = self.workflow
        if self.headers:
            envelope["headers"] = self.headers
        return envelope


def _problem(value: Any, where: str) -> tuple[str, str] | None:
    """(where, why and what to send instead) for the first value under ``value`` that JSON would
    refuse or silently change, depth first; None if there is none. Only runs on the error path
    and when the cheap checks in ``encode`` saw something suspicious."""
    if value is None or isinstance(value, str | bool):
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return where, "integer is outside the 64-bit range (-2**63 to 2**64-1); pass str()"
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return where, "NaN/infinity is not valid JSON; pass None or a string"
    if isinstance(value, list | tuple | dict):
        return _container_problem(value, where)
    return _leaf_problem(value, where)


def _container_problem(value: Sequence[Any] | dict[Any, Any], where: str) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        for index, item in enumerate(value):
            found = _problem(item, f"{where}[{index}]")
            if found:
                return found
        return None
    for key, item in value.items():
        if not isinstance(key, str):
            return where, f"dict keys must be strings, not {type(key).__name__} ({key!r})"
        found = _problem(item, f"{where}[{key!r}]")
        if found:
            return found
    return None


def _leaf_problem(value: Any, where: str) -> tuple[str, str] | None:
    name = type(value).__name__
    for types, hint in _HINTS:
        if isinstance(value, types):
            return where, f"type {name} is not JSON serialisable; {hint}"
    if dataclasses.is_dataclass(value):
        return where, f"type {name} is not JSON serialisable; pass dataclasses.asdict()"
    try:  # what orjson takes as it is (an Enum member, a str or int subclass...) is fine
        orjson.dumps(value, option=_DUMP_OPTIONS)
    except TypeError:
        return where, f"type {name} is not JSON serialisable"
    return None


def _arguments_problem(message: Message) -> str | None:
    """The first argument problem of a message, as ``where: why``; None if its arguments are fine."""
    found = _problem(list(message.args), "args") or _problem(message.kwargs, "kwargs")
    return f"{found[0]}: {found[1]}" if found else None


def _check_lossless(message: Message, body: bytes) -> None:
    """Raise ``EncodeError`` if orjson changed an argument silently (NaN/inf to null, UUID to text).

    Cheap on the common path (two C scans of the body): only a body with more ``null``
    than the envelope's own ``eta``/``expires``, or with UUID-shaped text, walks the arguments.
    """
    nulls = (message.eta is None) + (message.expires is None)
    if body.count(b"null") > nulls or _UUID_MIDDLE.search(body) is not None:
        problem = _arguments_problem(message)
        if problem:
            raise EncodeError(f"task {message.task}: {problem}")


def encode(message: Message, max_bytes: int | None = None, signing_key: str | None = None) -> bytes:
    """Serialise a message; raise ``EncodeError``/``MessageTooLarge`` before anything is sent.

    Raises:
        EncodeError: an argument JSON cannot carry as it is; the message says where
            (``args[0]['when']``), why, and what to send instead.
        MessageTooLarge: the body (signature included) is over ``max_bytes``.
    """
    try:
        body = orjson.dumps(message.to_dict(), option=_DUMP_OPTIONS)
    except TypeError:
        problem = _arguments_problem(message) or "the envelope is not JSON serialisable"
        raise EncodeError(f"task {message.task}: {problem}") from None
    _check_lossless(message, body)
    if signing_key:
        body = sign(body, signing_key)
    if max_bytes is not None and len(body) > max_bytes:
        raise MessageTooLarge(
            f"task {message.task}: message is {len(body):,} bytes, over max_message_bytes={max_bytes:,}"
        )
    return body


def sign(body: bytes, key: str) -> bytes:
    """Append an HMAC-SHA256 of the unsigned envelope as its last field, ``sig``."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest().encode()
    return body[:-1] + _SIG_FIELD + digest + b'"}'


def verify(body: bytes, keys: Sequence[str]) -> bool:
    """True if ``body`` carries a valid signature made with any of ``keys`` (rotation)."""
    cut = body.rfind(_SIG_FIELD)
    if cut < 0 or not body.endswith(b'"}'):
        return False
    unsigned = body[:cut] + b"}"
    given = body[cut + len(_SIG_FIELD) : -2]
    return any(
        hmac.compare_digest(hmac.new(k.encode(), unsigned, hashlib.sha256).hexdigest().encode(), given)
        for k in keys
    )


def decode(body: bytes) -> Message:
    """Parse bytes from Redis into a Message; ``DecodeError`` says what is wrong."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError("envelope is not a JSON object")
    if raw.get("v") != PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {raw.get('v')!r}")
    try:
        task_id, task, args, kwargs = raw["id"], raw["task"], raw["args"], raw["kwargs"]
    except KeyError as exc:
        raise DecodeError(f"envelope lacks field {exc.args[0]!r}") from None
    if not (
        isinstance(task_id, str)
        and isinstance(task, str)
        and isinstance(args, list)
        and isinstance(kwargs, dict)
    ):
        raise DecodeError("envelope fields id/task/args/kwargs have the wrong types")
    unique = raw.get("u")
    if unique is not None and not isinstance(unique, str):
        raise DecodeError("envelope field u (unique key) is not a string")
    workflow = raw.get("w")
    if workflow is not None and not isinstance(workflow, dict):
        raise DecodeError("envelope field w (workflow) is not an object")
    headers = raw.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise DecodeError("envelope field headers is not an object")
    priority, retries, created, eta, expires = _numbers(raw)
    queue = raw.get("queue") or "default"
    if not isinstance(queue, str):
        raise DecodeError("envelope field queue is not a string")
    # Positional, in the field order (every delivery builds one; keywords cost twice as long).
    return Message(
        task_id,
        task,
        args,
        kwargs,
        queue,
        priority,
        eta,
        expires,
        retries,
        created,
        unique,
        0,
        workflow,
        headers,
    )


def _numbers(raw: dict[str, Any]) -> tuple[int, int, float, float | None, float | None]:
    """(priority, retries, created, eta, expires) of an envelope; ``DecodeError`` for a value
    another client wrote that a worker could not use (a string eta, priority 99...)."""
    priority, retries, created = raw.get("priority") or 0, raw.get("retries") or 0, raw.get("created") or 0.0
    eta, expires = raw.get("eta"), raw.get("expires")
    # What greenq writes: exact types, checked without conversions (every delivery passes here).
    if (
        type(priority) is int
        and type(retries) is int
        and type(created) is float
        and eta is None
        and expires is None
        and PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        return priority, retries, created, None, None
    if any(t is not None and (isinstance(t, bool) or not isinstance(t, int | float)) for t in (eta, expires)):
        raise DecodeError("envelope fields eta/expires are not numbers (epoch seconds) or null")
    try:
        priority, retries, created = int(priority), int(retries), float(created)
    except (TypeError, ValueError, OverflowError):
        raise DecodeError("envelope fields priority/retries/created are not numbers") from None
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise DecodeError(f"envelope field priority {priority} is not in {PRIORITY_MIN}..{PRIORITY_MAX}")
    if not -(2**63) <= retries < 2**63:  # e.g. 1e300: its result record could not be written
        raise DecodeError(f"envelope field retries {raw.get('retries')!r} is out of range")
    return priority, retries, created, _seconds(eta), _seconds(expires)


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def now() -> float:
    """Wall-clock time as messages carry it (epoch seconds)."""
    return time.time()


def result_payload(
    task_id: str,
    task: str,
    state: str,
    *,
    result: Any = None,
    exc_type: str | None = None,
    exc_message: str | None = None,
    traceback: str | None = None,
    retries: int = 0,
    worker: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """Encode one result record (docs/protocol.md, "Result record"). A result that is not JSON
    raises ``TypeError`` (the worker turns that into FAILURE). ``extra``: more fields (workflow
    links, ``result_extended``, progress ``meta``)."""
    record: dict[str, Any] = {
        "id": task_id,
        "task": task,
        "state": state,
        "date_done": time.time(),
        "retries": retries,
    }
    if state == SUCCESS:
        record["result"] = result
    if exc_type is not None:
        record.update(exc_type=exc_type, exc_message=exc_message, traceback=traceback)
    if worker:
        record["worker"] = worker
    if extra:
        record.update(extra)
    return orjson.dumps(record, option=_DUMP_OPTIONS)


def decode_result(payload: bytes) -> dict[str, Any]:
    """Parse a result record written by ``result_payload``."""
    record: dict[str, Any] = orjson.loads(payload)
    return record
