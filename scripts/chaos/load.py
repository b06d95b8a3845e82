"""The chaos run's producers, and the listener that notes when each task's result became final.

Producers enqueue a seeded mix (early ack, late ack, ETA, retries, CPU tasks, unique enqueue,
tasks dead-lettered on failure, and poison messages XADDed raw) straight to Redis, not through
the proxy, and record every enqueue: ``ok``, ``maybe`` (the reply was lost: it may or may not
be in Redis) or ``failed`` (Redis refused it: not there). The listener subscribes to keyspace
events of ``XADD`` and reads each result record as it is written, so the checker knows the
first time a task's result was final (a run that starts later is a run after the final result).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from greenq.broker.keys import Keys
from greenq.exceptions import BrokerError, BrokerUnavailable
from greenq.message import READY_STATES, new_id

# kind -> weight in the mix
MIX = {
    "early": 22,
    "late": 22,
    "early_eta": 6,
    "late_eta": 10,
    "late_retry": 8,
    "early_retry": 5,
    "crunch": 8,
    "doomed": 3,
    "unique": 10,
    "poison": 3,
    "chain": 6,  # 2-4 late-ack steps (si), each a record of its own
}
UNIQUE_KEYS = 12  # unique enqueues pick one of these keys: many collide
RESULT_PREFIX = "greenq:result:"


@dataclass
class Enqueue:
    id: str
    kind: str
    t: float
    status: str = "ok"  # ok | maybe | failed
    eta: float | None = None
    added: bool = True  # unique: this call added the message (False: another task held the key)
    key: int | None = None  # unique key number
    t1: float = 0.0  # when the enqueue call returned
    chain: str | None = None  # chain: the id of its first step (the chain's name in the checker)
    step: int = 0  # chain: this step's place in it, from 0


@dataclass
class Load:
    """Producer threads at ``rate`` enqueues per second in all, and the result listener."""

    direct_url: str
    rate: float
    seed: int
    threads: int = 2
    records: list[Enqueue] = field(default_factory=list)
    finals: dict[str, list[tuple[str, float, str | None]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i in range(self.threads):
            rng = random.Random(self.seed * 1000 + i)
            thread = threading.Thread(target=self._produce, args=(rng,), daemon=True)
            thread.start()
            self._running.append(thread)
        listener = threading.Thread(target=self._listen, daemon=True)
        listener.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._running:
            thread.join(30)

    def stop_listening(self) -> None:
        self._listening = False

    # ---- producers ---------------------------------------------------------------------

    def _produce(self, rng: random.Random) -> None:
        from tests.apps import chaos_app

        raw = redis.Redis.from_url(self.direct_url, socket_timeout=10, socket_connect_timeout=5)
        kinds, weights = list(MIX), list(MIX.values())
        every = self.threads / self.rate
        next_at = time.monotonic()
        serial = 0
        while not self.stop.is_set():
            next_at += rng.expovariate(1 / every)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            kind = rng.choices(kinds, weights)[0]
            serial += 1
            record = Enqueue(new_id(), kind, time.time())
            records = self._chain_steps(rng, record) if kind == "chain" else [record]
            try:
                if kind == "poison":
                    self._poison(raw, rng, record, serial)
                elif kind == "chain":
                    self._send_chain(chaos_app, rng, records)
                else:
                    self._send(chaos_app, rng, record)
            except (BrokerUnavailable, redis.ConnectionError, redis.TimeoutError):
                record.status = "maybe"
            except (BrokerError, redis.ResponseError):
                record.status = "failed"
            for step in records:
                step.status, step.t1 = record.status, time.time()
            with self._lock:
                self.records.extend(records)
        raw.close()

    def _send(self, chaos_app: Any, rng: random.Random, record: Enqueue) -> None:
        kind, priority = record.kind, rng.choice((0, 0, 0, 5, 9))
        countdown = rng.uniform(0.2, 4.0) if kind.endswith("_eta") else None
        sleep = rng.choice((0.0, 0.01, 0.05, 0.2, 0.5, 1.5))
        options: dict[str, Any] = {"task_id": record.id, "priority": priority, "countdown": countdown}
        if countdown is not None:
            record.eta = time.time() + countdown  # at least: the producer adds it a moment later
        if kind in ("early", "early_eta"):
            chaos_app.early.apply_async((sleep,), **options)
        elif kind in ("late", "late_eta"):
            chaos_app.late.apply_async((sleep,), **options)
        elif kind == "late_retry":
            chaos_app.late_retry.apply_async((rng.randint(1, 3),), **options)
        elif kind == "early_retry":
            chaos_app.early_retry.apply_async((rng.randint(1, 2),), **options)
        elif kind == "crunch":
            chaos_app.crunch.apply_async((rng.randint(20_000, 300_000),), **options)
        elif kind == "doomed":
            chaos_app.doomed.apply_async((), **options)
        elif kind == "unique":
            record.key = rng.randrange(UNIQUE_KEYS)
            holder = chaos_app.unique_late.apply_async((record.key, 0.1 * (record.key % 4)), **options)
            record.added = holder.id == record.id

    @staticmethod
    def _chain_steps(rng: random.Random, first: Enqueue) -> list[Enqueue]:
        """A chain's steps, ids assigned before it is sent: a step whose enqueue reply was lost
        is still a task somebody enqueued."""
        first.chain = first.id
        later = [
            Enqueue(new_id(), "chain", first.t, chain=first.id, step=i) for i in range(1, rng.randint(2, 4))
        ]
        return [first, *later]

    def _send_chain(self, chaos_app: Any, rng: random.Random, steps: list[Enqueue]) -> None:
        from greenq import chain

        signatures = [
            chaos_app.late.si(rng.choice((0.0, 0.01, 0.05, 0.2))).set(task_id=step.id) for step in steps
        ]
        chain(*signatures).apply_async(priority=rng.choice((0, 0, 5, 9)))

    def _poison(self, raw: redis.Redis, rng: random.Random, record: Enqueue, serial: int) -> None:
        """A message no worker can run, XADDed by another client: each must be dead-lettered."""
        record.id = f"poison-{self.seed}-{serial}-{rng.randrange(10**6)}"
        shape = rng.randrange(3)
        if shape == 0:  # not JSON (nor UTF-8); carries its id as a marker
            body = record.id.encode() + b" \xff\xfe{" + rng.randbytes(rng.randrange(40))
        elif shape == 1:  # a task nobody registered
            envelope = {"v": 1, "id": record.id, "task": "chaos.nope", "args": [], "kwargs": {}}
            body = orjson.dumps(envelope)
        else:  # an envelope version from the future
            body = orjson.dumps({"v": 99, "id": record.id, "task": "tests.apps.chaos_app.early"})
        raw.xadd(Keys.stream("default", rng.choice((0, 5))), {"m": body})

    # ---- result listener -----------------------------------------------------------------

    def _listen(self) -> None:
        """Note each result record as it is written (first final state and time per task)."""
        while getattr(self, "_listening", True):
            try:
                client = redis.Redis.from_url(self.direct_url, socket_timeout=5, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe("__keyevent@0__:xadd")
                while getattr(self, "_listening", True):
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    key = message["data"].decode()
                    if key.startswith(RESULT_PREFIX):
                        self._note(client, key)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                time.sleep(0.2)  # Redis restarting: results written meanwhile are read at the end

    def _note(self, client: redis.Redis, key: str) -> None:
        entries = client.xrevrange(key, "+", "-", count=1)
        if not entries:
            return
        record = orjson.loads(entries[0][1][b"r"])
        if record.get("state") not in READY_STATES:
            return
        seen = self.finals.setdefault(record["id"], [])
        stamp = (record["state"], float(record["date_done"]), record.get("exc_type"))
        if stamp not in seen:
            seen.append(stamp)
