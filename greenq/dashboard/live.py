"""The live feed behind the overview: one reader of the task events stream per dashboard
process, shared by every open browser, and the server-sent-event stream each one gets.

While at least one browser listens, a thread (a greenlet under ``greenq dashboard``) reads
``greenq:events`` with ``XREAD BLOCK`` and, once a second, closes a tick: per queue, tasks
finished and failed in that second and their latency (received by a worker -> finished, p95;
a task whose ``received`` was not seen counts its runtime), plus the overview's counts
(``queries.overview``). So Redis does the same work for one browser or fifty, and none when
nobody looks. Workers must send task events (``worker_send_task_events``, ``greenq worker
-E``) for the throughput chart; the counts come from Redis alone. Imports: queries, config.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson

from greenq.dashboard import queries
from greenq.exceptions import GreenqError

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker

logger = logging.getLogger(__name__)
HISTORY = 120  # ticks (seconds) a new browser gets at once
RECEIVED_MAX = 100_000  # task ids whose "received" time is remembered for latency
KEEPALIVE_S = 15.0
FINISHED = ("succeeded", "failed", "retried", "revoked")


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class Feed:
    """Ticks of per-queue throughput and latency plus counts, for any number of listeners."""

    def __init__(self, broker: RedisBroker, route: Callable[[str], str | None] | None = None) -> None:
        self.broker = broker
        self.route = route
        self.rates = queries.RateMemory()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.latest: dict[str, Any] | None = None  # the last tick, with counts
        self._cond = threading.Condition()
        self._listeners = 0
        self._thread: threading.Thread | None = None
        self._received: dict[str, float] = {}
        self._bucket: dict[str, list[Any]] = {}  # queue -> [done, failed, latencies]

    # ---- listeners ---------------------------------------------------------------------

    def stream(self) -> Iterator[bytes]:
        """Server-sent events for one browser: the history at once, then each tick as it closes."""
        with self._cond:
            self._listeners += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="greenq-dashboard-feed", daemon=True)
                self._thread.start()
            seen = self.latest["t"] if self.latest else 0
            start = {"history": list(self.history), "tick": self.latest}
        try:
            yield b"retry: 2000\n" + _event("hello", start)
            while True:
                tick = self._next_tick(seen)
                if tick is None:
                    yield b": keepalive\n\n"  # a closed browser is noticed by this write
                    continue
                seen = tick["t"]
                yield _event("tick", tick)
        finally:
            with self._cond:
                self._listeners -= 1

    def recent(self) -> list[dict[str, Any]]:
        """The kept ticks' throughput (the overview renders its rates from them)."""
        with self._cond:
            return list(self.history)

    def _next_tick(self, seen: int) -> dict[str, Any] | None:
        """The first tick after ``seen``, or None after ``KEEPALIVE_S`` without one."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self.latest and self.latest["t"] > seen), KEEPALIVE_S)
            return self.latest if self.latest and self.latest["t"] > seen else None

    @property
    def listeners(self) -> int:
        with self._cond:
            return self._listeners

    def _keep_reading(self) -> bool:
        """Go on while someone listens; else stop, and let the next listener start a reader."""
        with self._cond:
            if self._listeners:
                return True
            self._thread = None
            return False

    # ---- the reader --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._read()
        finally:  # whatever ended it, the next listener must be able to start another
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _read(self) -> None:
        last_id = "$"
        next_tick = int(time.time()) + 1
        while self._keep_reading():
            try:
                wait_ms = max(1, int((next_tick - time.time()) * 1000))
                with self.broker.guard():
                    reply = self.broker.client.xread(
                        {self.broker.keys.EVENTS: last_id}, count=1000, block=wait_ms
                    )
                for entry_id, fields in reply[0][1] if reply else ():
                    last_id = entry_id
                    try:
                        self._count(orjson.loads(fields[b"e"]))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # not an event greenq wrote: skipped, like greenq events would
                if time.time() >= next_tick:
                    self._close(next_tick - 1)
                    next_tick = int(time.time()) + 1
            except GreenqError as exc:
                logger.warning("dashboard feed: %s", exc)
                self._close(next_tick - 1, error=str(exc))
                time.sleep(1.0)
                next_tick = int(time.time()) + 1

    def _count(self, event: dict[str, Any]) -> None:
        kind, task_id = event.get("event"), str(event.get("id"))
        if kind == "received":
            if len(self._received) >= RECEIVED_MAX:
                self._received.pop(next(iter(self._received)))
            self._received[task_id] = float(event.get("time", 0))
            return
        if kind not in FINISHED:
            return
        queue = str(event.get("queue") or "?")
        bucket = self._bucket.setdefault(queue, [0, 0, []])
        bucket[0] += 1
        bucket[1] += kind == "failed"
        received = self._received.pop(task_id, None)
        if received is not None and kind != "retried":
            bucket[2].append(max(0.0, float(event.get("time", 0)) - received))
        elif event.get("runtime_s") is not None:
            bucket[2].append(float(event["runtime_s"]))

    def _close(self, second: int, error: str | None = None) -> None:
        """End the tick of ``second``: its throughput, and the counts as Redis has them now."""
        bucket, self._bucket = self._bucket, {}
        rates = {
            queue: [done, failed, None if (p := _p95(lat)) is None else round(p * 1000, 1)]
            for queue, (done, failed, lat) in bucket.items()
        }
        tick: dict[str, Any] = {"t": second, "q": rates}
        with self._cond:
            self.history.append(dict(tick))
        if error is None:
            try:
                tick.update(counts(self.broker, self.route, self.rates))
            except GreenqError as exc:
                error = str(exc)
        if error:
            tick["error"] = error
        with self._cond:
            self.latest = tick
            self._cond.notify_all()


def counts(broker: RedisBroker, route: Any, rates: queries.RateMemory) -> dict[str, Any]:
    """The overview's tables as plain data (a tick's ``queues`` and ``workers``)."""
    seen = queries.overview(broker, route)
    rates.forget_except({str(w.get("consumer")) for w in seen.workers})
    return {
        "queues": [asdict(row) for row in seen.queues],
        "workers": [worker_row(w, rates) for w in seen.workers],
        "events_off": seen.events_off,
    }


def worker_row(worker: dict[str, Any], rates: queries.RateMemory) -> dict[str, Any]:
    """What the workers table shows of one heartbeat."""
    rate = rates.rate(worker)
    return {
        "name": worker.get("name") or worker.get("consumer"),
        "host": worker.get("host"),
        "pid": worker.get("pid"),
        "pool": worker.get("pool"),
        "concurrency": worker.get("concurrency"),
        "in_flight": int(worker.get("reserved", 0)) + int(worker.get("running", 0)),
        "running": int(worker.get("running", 0)) + int(worker.get("cpu_busy", 0)),
        "rate": None if rate is None else round(rate, 1),
        "processed": worker.get("processed", 0),
        "failed": worker.get("failed", 0),
        "rss_kib": queries.rss_kib(worker),
        "started_at": worker.get("started_at"),
        "heartbeat_age_s": round(float(worker.get("heartbeat_age_s", 0)), 1),
        "queues": worker.get("queues") or [],
    }


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data, default=str) + b"\n\n"
