"""Operations from Redis alone: queue and worker status, purge, peek, dead letters, forgetting
a queue, and what a revocation will do.

What ``greenq status|inspect|ping|purge|peek|dead|queue|revoke`` and the exporter show. Reads
heartbeats and stream metadata; never asks a worker anything (no broadcast round trip). Long
operations work in batches and report progress through a callback, so Redis is never blocked by
one giant command. Imports: broker.keys, message, exceptions (the broker is passed in).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import orjson

from greenq.broker.keys import EVENTS_MAX, GROUP, Keys, check_queue_name
from greenq.exceptions import ConfigError
from greenq.message import PRIORITY_MAX, PRIORITY_MIN, decode, verify

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker

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
    paused: bool = False  # greenq queue pause (docs/flow-control.md)
    rate_limit: str | None = None  # set at run time by greenq queue limit


def known_queues(broker: RedisBroker) -> list[str]:
    with broker.guard():
        return sorted(_text(q) for q in broker.client.smembers(broker.keys.QUEUES))


def queue_stats(
    broker: RedisBroker, queue: str, live_workers: list[dict[str, Any]] | None = None
) -> QueueStats:
    """Counts for one queue over all its priority bands. ``ready`` = not yet delivered.

    ``consumers`` counts the live workers (by heartbeat) that read the queue: the consumer
    group forgets nobody and is absent while the stream is empty, so it cannot say who reads.
    Pass ``live_workers`` (``workers()``) to count many queues from one read.
    """
    check_queue_name(queue)
    if live_workers is None:
        live_workers = workers(broker)
    bands = broker.keys.bands(queue)
    client = broker.client
    with broker.guard():
        pipe = client.pipeline(transaction=False)
        for key in bands:
            pipe.xlen(key)
        pipe.zcard(broker.keys.delayed(queue))
        pipe.xlen(broker.keys.dead(queue))
        pipe.get(broker.keys.dead_dropped(queue))
        pipe.hgetall(broker.keys.flow(queue))
        replies = pipe.execute()
        lengths, delayed, dead, dropped = (
            replies[: len(bands)],
            replies[-4],
            replies[-3],
            int(replies[-2] or 0),
        )
        flow = {_text(k): _text(v) for k, v in replies[-1].items()}
        in_flight = 0
        oldest: int | None = None
        for key, length in zip(bands, lengths, strict=True):
            if not length:
                continue
            groups = {_text(g["name"]): g for g in client.xinfo_groups(key)}
            group = groups.get(GROUP)
            pending = int(group["pending"]) if group else 0
            in_flight += pending
            last = _text(group["last-delivered-id"]) if group else "0-0"
            nxt = (
                client.xrange(key, min=f"({last}", count=1) if last != "0-0" else client.xrange(key, count=1)
            )
            if nxt:
                stamp = _id_ms(_text(nxt[0][0]))
                oldest = stamp if oldest is None else min(oldest, stamp)
    ready = sum(lengths) - in_flight
    age = None if oldest is None or ready <= 0 else max(0.0, time.time() - oldest / 1000)
    consumers = sum(1 for w in live_workers if queue in (w.get("queues") or ()))
    paused = "paused" in flow
    return QueueStats(
        queue, ready, in_flight, delayed, dead, dropped, age, consumers, paused, flow.get("rate")
    )


def workers(broker: RedisBroker) -> list[dict[str, Any]]:
    """Live workers' heartbeat records, with ``heartbeat_age_s``; names whose heartbeat expired
    are dropped from the registry as they are found."""
    with broker.guard():
        names = sorted(_text(n) for n in broker.client.smembers(broker.keys.WORKERS))
        mget = getattr(broker.client, "mget_nonatomic", None) or broker.client.mget  # cluster: an MGET a slot
        records = mget([broker.keys.worker(n) for n in names]) if names else []
        found = []
        for name, raw in zip(names, records, strict=True):
            if raw is None:
                broker.client.srem(broker.keys.WORKERS, name)
                continue
            record = orjson.loads(raw)
            record["heartbeat_age_s"] = max(0.0, time.time() - float(record.get("heartbeat_at", 0)))
            found.append(record)
    return found


def active_arguments(
    broker: RedisBroker, consumers: dict[str, list[str]], timeout_s: float = 6.0
) -> dict[str, dict[str, str]]:
    """Ask workers for the arguments of some of their running tasks (consumer -> task ids) and
    wait for their heartbeats to carry them; returns consumer -> {task id: JSON text, cut}.
    Heartbeats never carry arguments unasked: they are user data every operator can read."""
    wanted = {consumer: ids for consumer, ids in consumers.items() if ids}
    with broker.guard():
        for consumer, ids in wanted.items():
            broker.client.set(broker.keys.ask(consumer), orjson.dumps(ids), ex=30)
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    while wanted and time.monotonic() < deadline:
        for record in workers(broker):
            consumer = record["consumer"]
            published = record.get("args") or {}
            if consumer in wanted and all(i in published for i in wanted[consumer]):
                found[consumer] = {i: published[i] for i in wanted.pop(consumer)}
        if wanted:
            time.sleep(0.2)
    with broker.guard():
        for consumer in consumers:
            broker.client.delete(broker.keys.ask(consumer))
    return found


def status(broker: RedisBroker) -> dict[str, Any]:
    """Everything ``greenq status`` shows, as plain data (``--json``)."""
    live = workers(broker)
    return {
        "queues": [asdict(queue_stats(broker, q, live)) for q in known_queues(broker)],
        "workers": live,
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
        for key in broker.keys.bands(queue):
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
        for key in broker.keys.bands(queue):
            if len(found) >= count or not broker.client.exists(key):
                continue
            groups = {_text(g["name"]): g for g in broker.client.xinfo_groups(key)}
            last = _text(groups[GROUP]["last-delivered-id"]) if GROUP in groups else "0-0"
            start = f"({last}" if last != "0-0" else "-"
            for entry_id, fields in broker.client.xrange(key, min=start, count=count - len(found)):
                found.append(describe_entry(entry_id, fields))
    return found


def describe_entry(entry_id: Any, fields: dict[bytes, bytes]) -> dict[str, Any]:
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
            for entry_id, fields in broker.client.xrange(broker.keys.dead(name), count=count):
                out.append({"queue": name, **describe_entry(entry_id, fields)})
    return out


def _dead_entries(
    broker: RedisBroker, queue: str | None, ids: list[str]
) -> Iterator[tuple[str, Any, dict[Any, Any]]]:
    for name in _dead_queues(broker, queue):
        if ids:
            for entry_id in ids:
                for found_id, fields in broker.client.xrange(
                    broker.keys.dead(name), min=entry_id, max=entry_id
                ):
                    yield name, found_id, fields
        else:
            start = "-"
            while True:
                entries = broker.client.xrange(broker.keys.dead(name), min=start, count=BATCH)
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
            pipe.xadd(broker.keys.stream(name, priority), {"m": body})
            pipe.xdel(broker.keys.dead(name), entry_id)
            pipe.execute()
            moved += 1
            if progress:
                progress(moved, 0)
    return moved, refused


def dead_purge(broker: RedisBroker, queue: str | None = None) -> int:
    removed = 0
    with broker.guard():
        for name in _dead_queues(broker, queue):
            removed += int(broker.client.xlen(broker.keys.dead(name)))
            broker.client.delete(broker.keys.dead(name))
    return removed


# ---- flow control: pause, resume, rate (docs/flow-control.md) -------------------------------


def control_queue(broker: RedisBroker, queue: str, action: str, rate: str | None = None) -> str:
    """``pause``, ``resume`` or ``limit`` (``rate``: Celery's rate string, ``0`` for none,
    ``default`` for the ``queue_rate_limits`` setting) in the queue's flow hash, which workers
    read every 0.5 s; announced on the events stream. Returns what was done."""
    from greenq.limits import parse_rate

    _require_queue(broker, queue)
    key, now, client = broker.keys.flow(queue), time.time(), broker.client
    with broker.guard():
        if action in ("pause", "resume"):
            client.hset(key, "paused", now) if action == "pause" else client.hdel(key, "paused")
            done = f"{action}d {queue}" + (
                ": workers stop reserving from it within a second" * (action == "pause")
            )
        elif rate == "default":
            client.hdel(key, "rate")
            done = f"{queue}: rate limit back to the queue_rate_limits setting"
        else:
            parsed = parse_rate(rate, f"greenq queue limit {queue}")
            client.hset(key, "rate", parsed.text if parsed else "0")
            done = f"{queue}: rate limit {parsed.text if parsed else 'none'}, over all workers together"
        event = {"event": f"queue-{action}", "queue": queue, "rate": rate, "time": now}
        client.xadd(broker.keys.EVENTS, {"e": orjson.dumps(event)}, maxlen=EVENTS_MAX, approximate=True)
    return done


# ---- forgetting a queue, revocations -------------------------------------------------------


def queue_keys(keys: type[Keys], queue: str) -> list[str]:
    """Every key that belongs to one queue (band streams with their group, delayed, dead...)."""
    return [
        *keys.bands(queue),
        keys.delayed(queue),
        keys.flow(queue),
        keys.dead(queue),
        keys.dead_dropped(queue),
        keys.recovered(queue),
    ]


def drop_queue(broker: RedisBroker, queue: str) -> None:
    """Delete a queue and everything in it, and take it out of ``greenq:queues``.

    No checks: for a queue this process owns (``greenq demo``'s) once its worker has stopped.
    """
    check_queue_name(queue)
    with broker.guard():
        pipe = broker.client.pipeline(transaction=False)
        pipe.delete(*queue_keys(broker.keys, queue))
        pipe.srem(broker.keys.QUEUES, queue)
        pipe.execute()


def forget_queue(broker: RedisBroker, queue: str) -> None:
    """Take an empty, unread queue out of ``greenq status`` (``greenq queue forget``).

    Refuses while any message is ready, in flight, delayed or dead, or a live worker reads the
    queue (it would list it again on its next heartbeat). The emptiness check and the delete are
    one transaction (WATCH), so a message enqueued meanwhile makes it refuse, never vanish.

    Raises:
        ConfigError: unknown queue, messages left, or live consumers (named).
    """
    import redis

    _require_queue(broker, queue)
    readers = [
        str(w.get("name") or w.get("consumer")) for w in workers(broker) if queue in (w.get("queues") or ())
    ]
    if readers:
        raise ConfigError(f"queue {queue!r} is read by {len(readers)} live worker(s): {', '.join(readers)}")
    keys = queue_keys(broker.keys, queue)
    with broker.guard(), broker.client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(*keys)
            counts = [pipe.xlen(k) for k in broker.keys.bands(queue)] + [
                pipe.zcard(broker.keys.delayed(queue)),
                pipe.xlen(broker.keys.dead(queue)),
            ]
            if any(counts):
                stats = queue_stats(broker, queue, [])
                raise ConfigError(
                    f"queue {queue!r} still holds messages (ready {stats.ready}, in flight "
                    f"{stats.in_flight}, delayed {stats.delayed}, dead {stats.dead}): purge them first"
                )
            pipe.multi()
            pipe.delete(*keys)
            pipe.execute()
        except redis.WatchError:
            raise ConfigError(f"queue {queue!r} changed while being forgotten; nothing removed") from None
    with broker.guard():
        broker.client.srem(broker.keys.QUEUES, queue)


def revoke_report(app: Any, task_ids: list[str], terminate: bool) -> list[str]:
    """What a revocation just sent will do to each task, from its result and the heartbeats.

    A result record tells a finished or started task; a heartbeat's ``active`` list tells one
    running now. Neither means the task waits in a queue (it will be skipped) or was never
    sent: telling those apart would mean scanning every queue, so the line says both.
    """
    running = {a.get("id"): w.get("name") for w in workers(app.broker) for a in w.get("active") or ()}
    lines = []
    for task_id in task_ids:
        raw = app.broker.read_result(task_id)
        state = orjson.loads(raw).get("state") if raw else None
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            lines.append(f"{task_id}: already {state}; revoking it changed nothing")
        elif task_id in running or state == "STARTED":
            where = f" on {running[task_id]}" if task_id in running else ""
            lines.append(
                f"{task_id}: already running{where}: --terminate ends it (prefork child or greenlet)"
                if terminate
                else f"{task_id}: already running{where}: revoke takes effect only if it has not "
                "started, so it will finish"
            )
        elif state:
            lines.append(f"{task_id}: revoked (state {state}): it will be skipped when it is due")
        else:
            lines.append(
                f"{task_id}: unknown so far: no result and not running on any live worker; if it "
                "waits in a queue it will be skipped (REVOKED), else this does nothing"
            )
    return lines
