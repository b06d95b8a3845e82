"""Operations from Redis alone: queue and worker status, purge, peek, dead letters.

What ``greenq status|inspect|ping|purge|peek|dead`` and the exporter show. Reads heartbeats and
stream metadata; never asks a worker anything (no broadcast round trip). Long operations work
in batches and report progress through a callback, so Redis is never blocked by one giant
command. Imports: broker.redis, message, config.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from greenq.broker.redis import GROUP, Keys, RedisBroker, check_queue_name
from greenq.exceptions import ConfigError
from greenq.message import PRIORITY_MAX, PRIORITY_MIN, decode, verify

BATCH = 1000
Progress = Callable[[int, int], None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


@dataclass
class QueueStats:
    name: str
    ready: int
    in_flight: int
    delayed: int
    dead: int
    dead_dropped: int
    oldest_age_s: float | None
    consumers: int


def known_queues(broker: RedisBroker) -> list[str]:
    with broker.guard():
        return sorted(_text(q) for q in broker.client.smembers(Keys.QUEUES))


def queue_stats(broker: RedisBroker, queue: str) -> QueueStats:
    """Counts for one queue over all its priority bands. ``ready`` = not yet delivered."""
    check_queue_name(queue)
    bands = Keys.bands(queue)
    client = broker.client
    with broker.guard():
        pipe = client.pipeline(transaction=False)
        for key in bands:
            pipe.xlen(key)
        pipe.zcard(Keys.delayed(queue))
        pipe.xlen(Keys.dead(queue))
        pipe.get(Keys.dead_dropped(queue))
        replies = pipe.execute()
        lengths, delayed, dead, dropped = (
            replies[: len(bands)],
            replies[-3],
            replies[-2],
            int(replies[-1] or 0),
        )
        in_flight = consumers = 0
        oldest: int | None = None
        for key, length in zip(bands, lengths, strict=True):
            if not length:
                continue
            groups = {_text(g["name"]): g for g in client.xinfo_groups(key)}
            group = groups.get(GROUP)
            pending = int(group["pending"]) if group else 0
            in_flight += pending
            consumers = max(consumers, int(group["consumers"]) if group else 0)
            last = _text(group["last-delivered-id"]) if group else "0-0"
            nxt = (
                client.xrange(key, min=f"({last}", count=1) if last != "0-0" else client.xrange(key, count=1)
            )
            if nxt:
                stamp = _id_ms(_text(nxt[0][0]))
                oldest = stamp if oldest is None else min(oldest, stamp)
    ready = sum(lengths) - in_flight
    age = None if oldest is None or ready <= 0 else max(0.0, time.time() - oldest / 1000)
    return QueueStats(queue, ready, in_flight, delayed, dead, dropped, age, consumers)


def workers(broker: RedisBroker) -> list[dict[str, Any]]:
    """Live workers' heartbeat records, with ``heartbeat_age_s``; names whose heartbeat expired
    are dropped from the registry as they are found."""
    with broker.guard():
        names = sorted(_text(n) for n in broker.client.smembers(Keys.WORKERS))
        records = broker.client.mget([Keys.worker(n) for n in names]) if names else []
        found = []
        for name, raw in zip(names, records, strict=True):
            if raw is None:
                broker.client.srem(Keys.WORKERS, name)
                continue
            record = orjson.loads(raw)
            record["heartbeat_age_s"] = max(0.0, time.time() - float(record.get("heartbeat_at", 0)))
            found.append(record)
    return found


def status(broker: RedisBroker) -> dict[str, Any]:
    """Everything ``greenq status`` shows, as plain data (``--json``)."""
    return {
        "queues": [asdict(queue_stats(broker, q)) for q in known_queues(broker)],
        "workers": workers(broker),
    }


def _require_queue(broker: RedisBroker, queue: str) -> None:
    check_queue_name(queue)
    if queue not in known_queues(broker):
        raise ConfigError(f"unknown queue {queue!r}; known: {', '.join(known_queues(broker)) or 'none'}")


def purge(broker: RedisBroker, queue: str, progress: Progress | None = None) -> int:
    """Delete a queue's ready messages (not those in flight, not delayed), BATCH at a time."""
    _require_queue(broker, queue)
    removed = 0
    total = max(0, queue_stats(broker, queue).ready)
    with broker.guard():
        for key in Keys.bands(queue):
            groups = (
                {_text(g["name"]): g for g in broker.client.xinfo_groups(key)}
                if broker.client.exists(key)
                else {}
            )
            last = _text(groups[GROUP]["last-delivered-id"]) if GROUP in groups else "0-0"
            start = f"({last}" if last != "0-0" else "-"
            while True:
                entries = broker.client.xrange(key, min=start, count=BATCH)
                if not entries:
                    break
                ids = [entry_id for entry_id, _ in entries]
                removed += broker.client.xdel(key, *ids)
                start = f"({_text(ids[-1])}"
                if progress:
                    progress(removed, total)
    return removed


def peek(broker: RedisBroker, queue: str, count: int = 10) -> list[dict[str, Any]]:
    """The next ready messages, highest priority first, decoded, without consuming them."""
    _require_queue(broker, queue)
    found: list[dict[str, Any]] = []
    with broker.guard():
        for key in Keys.bands(queue):
            if len(found) >= count or not broker.client.exists(key):
                continue
            groups = {_text(g["name"]): g for g in broker.client.xinfo_groups(key)}
            last = _text(groups[GROUP]["last-delivered-id"]) if GROUP in groups else "0-0"
            start = f"({last}" if last != "0-0" else "-"
            for entry_id, fields in broker.client.xrange(key, min=start, count=count - len(found)):
                found.append(_describe(entry_id, fields))
    return found


def _describe(entry_id: Any, fields: dict[bytes, bytes]) -> dict[str, Any]:
    body = fields.get(b"m", b"")
    record: dict[str, Any] = {"entry": _text(entry_id), "deliveries": int(fields.get(b"d", b"1"))}
    try:
        message = decode(body)
        record.update(
            id=message.id,
            task=message.task,
            args=list(message.args),
            kwargs=message.kwargs,
            priority=message.priority,
            retries=message.retries,
            created=message.created,
        )
    except Exception as exc:  # a dead letter may be anything
        record.update(undecodable=str(exc), raw=body[:200].decode(errors="replace"))
    for name in (b"reason", b"worker", b"time"):
        if name in fields:
            record[name.decode()] = _text(fields[name])
    return record


# ---- dead letters ----------------------------------------------------------------------


def _dead_queues(broker: RedisBroker, queue: str | None) -> list[str]:
    if queue:
        _require_queue(broker, queue)
        return [queue]
    return known_queues(broker)


def dead_list(broker: RedisBroker, queue: str | None = None, count: int = 100) -> list[dict[str, Any]]:
    out = []
    with broker.guard():
        for name in _dead_queues(broker, queue):
            for entry_id, fields in broker.client.xrange(Keys.dead(name), count=count):
                out.append({"queue": name, **_describe(entry_id, fields)})
    return out


def _dead_entries(broker: RedisBroker, queue: str | None, ids: list[str]) -> Iterator[tuple[str, Any, dict]]:
    for name in _dead_queues(broker, queue):
        if ids:
            for entry_id in ids:
                for found_id, fields in broker.client.xrange(Keys.dead(name), min=entry_id, max=entry_id):
                    yield name, found_id, fields
        else:
            start = "-"
            while True:
                entries = broker.client.xrange(Keys.dead(name), min=start, count=BATCH)
                if not entries:
                    break
                for found_id, fields in entries:
                    yield name, found_id, fields
                start = f"({_text(entries[-1][0])}"


def dead_requeue(
    broker: RedisBroker,
    queue: str | None,
    ids: list[str],
    signing_keys: list[str],
    progress: Progress | None = None,
) -> tuple[int, list[str]]:
    """Move dead letters back to their stream with the delivery count reset.

    With signing keys configured, a message whose signature does not verify is refused (it
    stays dead) — re-sign it by sending the task again. Returns (requeued, refusals).
    """
    moved, refused = 0, []
    with broker.guard():
        for name, entry_id, fields in list(_dead_entries(broker, queue, ids)):
            body = fields.get(b"m", b"")
            if signing_keys and not verify(body, signing_keys):
                refused.append(f"{_text(entry_id)}: signature missing or invalid; not requeued")
                continue
            try:
                priority = min(PRIORITY_MAX, max(PRIORITY_MIN, decode(body).priority))
            except Exception:
                refused.append(f"{_text(entry_id)}: not a valid message; not requeued")
                continue
            pipe = broker.client.pipeline(transaction=True)
            pipe.xadd(Keys.stream(name, priority), {"m": body})
            pipe.xdel(Keys.dead(name), entry_id)
            pipe.execute()
            moved += 1
            if progress:
                progress(moved, 0)
    return moved, refused


def dead_purge(broker: RedisBroker, queue: str | None = None) -> int:
    removed = 0
    with broker.guard():
        for name in _dead_queues(broker, queue):
            removed += int(broker.client.xlen(Keys.dead(name)))
            broker.client.delete(Keys.dead(name))
    return removed
