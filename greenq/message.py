"""Message: the versioned JSON envelope of one task call, and its orjson codec.

Owns the wire format (documented field by field in docs/protocol.md) and argument checks:
a value that is not plain JSON fails here, at enqueue, naming the argument, before anything
reaches Redis. JSON only, never pickle. Imports: exceptions, orjson.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
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


def new_id() -> str:
    """A fresh task id: 128 random bits as 32 hex characters (the shape of a uuid4 hex, at a
    quarter of ``uuid.uuid4()``'s cost; nothing parses ids as UUIDs)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class Message:
    """One task call as it travels through Redis.

    Treated as immutable: change it with ``with_changes``. Not ``frozen``, because a frozen
    dataclass costs ~2 µs more per message to build, on every enqueue and every delivery.
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
    options: dict[str, Any] = field(default_factory=dict)

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
        if self.options:
            envelope["options"] = self.options
        return envelope


def _describe_unserialisable(message: Message) -> str:
    """Find which argument cannot be encoded, for an error message that names it."""
    for index, value in enumerate(message.args):
        try:
            orjson.dumps(value, option=_DUMP_OPTIONS)
        except TypeError:
            return f"args[{index}]: type {type(value).__name__} is not JSON serialisable"
    for key, value in message.kwargs.items():
        if not isinstance(key, str):
            return f"kwargs key {key!r}: keys must be strings"
        try:
            orjson.dumps(value, option=_DUMP_OPTIONS)
        except TypeError:
            return f"kwargs[{key!r}]: type {type(value).__name__} is not JSON serialisable"
    return "options are not JSON serialisable"


def encode(message: Message, max_bytes: int | None = None, signing_key: str | None = None) -> bytes:
    """Serialise a message; raise ``EncodeError``/``MessageTooLarge`` before anything is sent."""
    try:
        body = orjson.dumps(message.to_dict(), option=_DUMP_OPTIONS)
    except TypeError:
        raise EncodeError(f"task {message.task}: {_describe_unserialisable(message)}") from None
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
    return Message(
        id=task_id,
        task=task,
        args=args,
        kwargs=kwargs,
        queue=raw.get("queue") or "default",
        priority=int(raw.get("priority") or 0),
        eta=raw.get("eta"),
        expires=raw.get("expires"),
        retries=int(raw.get("retries") or 0),
        created=float(raw.get("created") or 0.0),
        options=raw.get("options") or {},
    )


def now() -> float:
    """Wall-clock time as messages carry it (epoch seconds)."""
    return time.time()
