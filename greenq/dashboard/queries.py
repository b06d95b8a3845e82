"""The dashboard's reads: the overview (every queue and worker), one task, delayed messages.

All read-only and bounded. The overview never scans a stream: per queue it costs one pipelined
round trip of XLEN/ZCARD for every queue at once, one of XINFO GROUPS for the non-empty bands,
and one ``XRANGE … COUNT 1`` for the oldest undelivered entry (a seek, not a scan), whatever the
number of messages; workers come from their heartbeat keys (``greenq.admin.workers``). A task
page reads the task's own result stream and at most ``EVENTS_LOOKBACK`` recent task events.
Imports: admin, broker.keys, message.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from greenq import admin
from greenq.broker.keys import GROUP, Keys
from greenq.message import decode

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker

EVENTS_LOOKBACK = 5_000  # task events searched for one task's timeline (newest first)
DELAYED_SHOWN = 100


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class QueueRow:
    name: str
    waiting: int = 0  # in the streams, not yet delivered to any worker
    reserved: int = 0  # delivered, not acked (prefetched, or running with acks_late)
    running: int = 0  # running now, by the workers' heartbeats
    delayed: int = 0
    dead: int = 0
    oldest_age_s: float | None = None  # of the oldest waiting message
    consumers: int = 0
    # FLOW CONTROL (issue 20): ``paused`` and the queue's rate/concurrency limits go here, read in
    # the same pipelined round trip, once greenq has them; the overview and queue page show them.


@dataclass
class Overview:
    queues: list[QueueRow]
    workers: list[dict[str, Any]]
    events_off: list[str] = field(default_factory=list)  # live workers that send no task events
    read_at: float = 0.0


def overview(broker: RedisBroker, route: Any = None, only: str | None = None) -> Overview:
    """Every queue's counts (or ``only`` one's) and every live worker, in six round trips
    whatever their size.

    ``route``: task name -> queue (the app's routing), to place a running task of a worker that
    reads several queues; without it such a task counts for the worker's first queue.
    """
    live = admin.workers(broker)
    names = [only] if only else admin.known_queues(broker)
    rows = {name: QueueRow(name) for name in names}
    client = broker.client
    with broker.guard():
        pipe = client.pipeline(transaction=False)
        for name in names:
            for key in broker.keys.bands(name):
                pipe.xlen(key)
            pipe.zcard(broker.keys.delayed(name))
            pipe.xlen(broker.keys.dead(name))
        replies = pipe.execute()
        width = len(broker.keys.bands("x")) + 2
        busy: list[tuple[str, str, int]] = []  # (queue, band key, length)
        for index, name in enumerate(names):
            chunk = replies[index * width : (index + 1) * width]
            rows[name].delayed, rows[name].dead = int(chunk[-2]), int(chunk[-1])
            busy += [
                (name, key, int(n)) for key, n in zip(broker.keys.bands(name), chunk[:-2], strict=True) if n
            ]
        groups = _groups(client, [key for _, key, _ in busy])
        seeks = []
        for (name, key, length), group in zip(busy, groups, strict=True):
            pending = int(group["pending"]) if group else 0
            rows[name].reserved += pending
            rows[name].waiting += max(0, length - pending)
            if length > pending:
                last = _text(group["last-delivered-id"]) if group else "0-0"
                seeks.append((name, key, "-" if last == "0-0" else f"({last}"))
        _oldest(client, rows, seeks)
    _running(rows, live, route)
    off = [str(w.get("name")) for w in live if w.get("send_task_events") is False]
    return Overview(list(rows.values()), live, off, time.time())


def _groups(client: Any, keys: list[str]) -> list[dict[str, Any] | None]:
    """The greenq consumer group of each stream (None where it has none yet), one round trip."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_groups(key)
    found = []
    for reply in pipe.execute(raise_on_error=False):
        entries = reply if isinstance(reply, list) else []
        found.append(next((g for g in entries if _text(g["name"]) == GROUP), None))
    return found


def _oldest(client: Any, rows: dict[str, QueueRow], seeks: list[tuple[str, str, str]]) -> None:
    """Age of each queue's oldest undelivered entry: its id is its enqueue time (ms)."""
    if not seeks:
        return
    pipe = client.pipeline(transaction=False)
    for _, key, start in seeks:
        pipe.xrange(key, min=start, count=1)
    clock = time.time()
    for (name, _, _), entries in zip(seeks, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(entries, list) or not entries:
            continue
        age = max(0.0, clock - int(_text(entries[0][0]).split("-", 1)[0]) / 1000)
        row = rows[name]
        row.oldest_age_s = age if row.oldest_age_s is None else max(row.oldest_age_s, age)


def _running(rows: dict[str, QueueRow], live: list[dict[str, Any]], route: Any) -> None:
    """Running tasks per queue from heartbeats: a worker of one queue counts all its tasks
    there; one of several places each task by its route (``route``), else in its first queue."""
    for worker in live:
        queues = [q for q in worker.get("queues") or () if q in rows]
        for name in queues:
            rows[name].consumers += 1
        if not queues:
            continue
        if len(queues) == 1:
            rows[queues[0]].running += int(worker.get("running", 0)) + int(worker.get("cpu_busy", 0))
            continue
        for entry in worker.get("active") or ():
            routed = route(entry.get("task")) if route else None
            rows[routed if routed is not None and routed in queues else queues[0]].running += 1


def rss_kib(worker: dict[str, Any]) -> int | None:
    """A worker's resident memory: from its heartbeat when it says, else from /proc when the
    worker runs on this host (the heartbeat of this greenq version carries no RSS)."""
    if "rss_kib" in worker:
        return int(worker["rss_kib"])
    if worker.get("host") != socket.gethostname() or not worker.get("pid"):
        return None
    proc = f"/proc/{int(worker['pid'])}"
    try:
        with open(f"{proc}/cmdline", "rb") as cmdline:
            if b"greenq" not in cmdline.read():
                return None  # the pid was reused: not our worker
        with open(f"{proc}/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return None


class RateMemory:
    """Tasks/s of each worker, from the ``processed`` counter of two successive heartbeats."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int, float | None]] = {}  # consumer -> (at, processed, rate)

    def rate(self, worker: dict[str, Any]) -> float | None:
        consumer = str(worker.get("consumer"))
        at, processed = float(worker.get("heartbeat_at", 0)), int(worker.get("processed", 0))
        before = self._seen.get(consumer)
        rate = before[2] if before else None
        if before and at > before[0]:
            rate = max(0.0, (processed - before[1]) / (at - before[0]))
        if before is None or at > before[0]:
            self._seen[consumer] = (at, processed, rate)
        return rate

    def forget_except(self, consumers: set[str]) -> None:
        for gone in set(self._seen) - consumers:
            del self._seen[gone]


# ---- one task -------------------------------------------------------------------------


def task(broker: RedisBroker, task_id: str, hint: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """What Redis knows of one task: its result records (every state written, oldest first), its
    recent events, whether a live worker runs it, whether it is revoked, the group it names,
    and — with ``hint`` (stream kind ``dead`` or ``stream``, queue, entry id) from a dead-letter
    or peek link — the message itself, with its arguments."""
    client = broker.client
    with broker.guard():
        pipe = client.pipeline(transaction=False)
        pipe.xrange(broker.keys.result(task_id), count=100)
        pipe.xrevrange(broker.keys.EVENTS, count=EVENTS_LOOKBACK)
        pipe.get(broker.keys.revoked(task_id))
        pipe.lrange(broker.keys.group(task_id), 0, 199)
        results, events, revoked, members = pipe.execute()
        message = _message(client, broker.keys, hint) if hint else None
    records = [orjson.loads(fields[b"r"]) for _, fields in results if b"r" in fields]
    needle = task_id.encode()
    timeline = [
        record
        for record in (orjson.loads(fields[b"e"]) for _, fields in reversed(events) if needle in fields[b"e"])
        if record.get("id") == task_id
    ]
    running = [
        {"worker": w.get("name"), "started": a.get("started")}
        for w in admin.workers(broker)
        for a in w.get("active") or ()
        if a.get("id") == task_id
    ]
    return {
        "id": task_id,
        "records": records,
        "latest": records[-1] if records else None,
        "events": timeline,
        "running": running,
        "revoked": _text(revoked) if revoked else None,
        "group_members": [_text(m) for m in members],
        "message": message,
    }


def _message(client: Any, keyspace: type[Keys], hint: tuple[str, str, str]) -> dict[str, Any] | None:
    """The message at a dead-letter or band-stream entry (one seek by id)."""
    kind, queue, entry = hint
    keys = [keyspace.dead(queue)] if kind == "dead" else list(keyspace.bands(queue))
    for key in keys:
        found = client.xrange(key, min=entry, max=entry)
        if found:
            return {"queue": queue, "where": kind, **admin.describe_entry(found[0][0], found[0][1])}
    return None


# ---- delayed --------------------------------------------------------------------------


def delayed(broker: RedisBroker, queues: list[str], limit: int = DELAYED_SHOWN) -> list[dict[str, Any]]:
    """The ``limit`` soonest delayed (ETA, countdown, retry) messages of ``queues``, by due time:
    the first ``limit`` of each sorted set, merged."""
    if not queues:
        return []
    with broker.guard():
        pipe = broker.client.pipeline(transaction=False)
        for name in queues:
            pipe.zrange(broker.keys.delayed(name), 0, limit - 1, withscores=True)
        replies = pipe.execute()
    found = []
    for name, members in zip(queues, replies, strict=True):
        for member, score in members:
            _, _, body = member.partition(b"|")
            row: dict[str, Any] = {"queue": name, "due": score / 1000}
            try:
                message = decode(body)
                row.update(id=message.id, task=message.task, args=list(message.args), kwargs=message.kwargs)
                row.update(retries=message.retries, priority=message.priority)
            except Exception as exc:  # shown as it is, like a dead letter
                row.update(undecodable=str(exc))
            found.append(row)
    found.sort(key=lambda row: row["due"])
    return found[:limit]


def delayed_counts(broker: RedisBroker, queues: list[str]) -> dict[str, int]:
    with broker.guard():
        pipe = broker.client.pipeline(transaction=False)
        for name in queues:
            pipe.zcard(broker.keys.delayed(name))
        return {name: int(n) for name, n in zip(queues, pipe.execute(), strict=True)}
