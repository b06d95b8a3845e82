"""The fault injector: at random (seeded) intervals, one fault of each kind in a shuffled cycle,
each in its own thread so that faults overlap.

Kinds: ``kill`` (SIGKILL a worker, or its whole process group, and start a replacement),
``zombie`` (SIGSTOP a worker past ``worker_lost_timeout``, then SIGCONT: it wakes up holding
work that others recovered), ``redis_restart`` (SIGKILL Redis and start it again from its AOF:
``everysec``, and ``always`` between the first and the second restart), ``cut``, ``delay`` and
``stall`` (the workers' TCP connections, through the proxy), ``pause`` (``CLIENT PAUSE ... ALL``)
and ``fill`` (Redis at ``maxmemory`` with ``noeviction``, so every write is refused). Every
fault is logged with its times and its victim, which the checker uses to explain duplicates.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from chaos.cluster import Cluster, Target

KINDS = ("kill", "zombie", "redis_restart", "cut", "delay", "stall", "pause", "fill")
FILL_CHUNK = b"x" * 256 * 1024


@dataclass
class Fault:
    kind: str
    t0: float
    t1: float = 0.0
    pid: int | None = None  # the victim's process (group leader)
    worker: str | None = None
    capacity: int = 0  # messages the victim could hold: what it may leave to run twice
    concurrency: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class Injector:
    def __init__(self, cluster: Cluster, seed: int, mean_interval_s: float, start_worker: Any) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.mean_interval_s = mean_interval_s
        self.start_worker = start_worker  # (Worker) -> None: a replacement process for a slot
        self.faults: list[Fault] = []
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._one_zombie = threading.Lock()  # one zombie at a time
        self._restarts = 0
        self._main: threading.Thread | None = None

    def start(self) -> None:
        self._main = threading.Thread(target=self._loop, daemon=True)
        self._main.start()

    def finish(self) -> None:
        """Stop injecting and wait for every fault to end (workers woken, Redis up, proxy clear)."""
        self.stop.set()
        if self._main is not None:
            self._main.join()
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        cycle: list[str] = []
        while not self.stop.wait(self.rng.expovariate(1 / self.mean_interval_s)):
            if not cycle:
                cycle = list(KINDS)
                self.rng.shuffle(cycle)
            kind = cycle.pop()
            fault = Fault(kind, time.time())
            # Draw the fault's randomness here, in order, so a seed gives the same faults.
            params = {"u": self.rng.random(), "v": self.rng.random()}
            thread = threading.Thread(target=self._run, args=(fault, params), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, fault: Fault, p: dict[str, float]) -> None:
        try:
            getattr(self, f"_{fault.kind}")(fault, p)
        except Exception as exc:  # a fault that could not be applied is reported, not fatal
            fault.detail["error"] = f"{type(exc).__name__}: {exc}"
        fault.t1 = time.time()
        self.faults.append(fault)

    def _victim(self, fault: Fault, u: float, killable: bool) -> Target | None:
        targets = [t for t in self.cluster.targets() if t.killable or not killable]
        targets = [t for t in targets if t.pid not in self.cluster.stopped]
        if not targets:
            return None
        target = targets[int(u * len(targets)) % len(targets)]
        fault.pid, fault.worker = target.pid, target.worker.name
        fault.capacity, fault.concurrency = target.capacity, target.concurrency
        return target

    # ---- worker faults -----------------------------------------------------------------

    def _kill(self, fault: Fault, p: dict[str, float]) -> None:
        target = self._victim(fault, p["u"], killable=True)
        if target is None:
            fault.detail["skipped"] = "no killable worker"
            return
        whole_group = p["v"] < 0.5
        fault.detail["group"] = whole_group
        if whole_group:
            self.cluster.signal_group(target.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target.pid, signal.SIGKILL)
        if target.replace:
            assert target.worker.proc is not None
            target.worker.proc.wait()
            time.sleep(0.5)
            self.start_worker(target.worker)

    def _zombie(self, fault: Fault, p: dict[str, float]) -> None:
        with self._one_zombie:
            target = self._victim(fault, p["u"], killable=False)
            if target is None:
                fault.detail["skipped"] = "no worker"
                return
            stopped_s = self.cluster.lost_timeout_s + 1 + 2 * p["v"]
            fault.detail["stopped_s"] = round(stopped_s, 2)
            self.cluster.stopped.add(target.pid)
            self.cluster.signal_group(target.pid, signal.SIGSTOP)
            time.sleep(stopped_s)
            self.cluster.signal_group(target.pid, signal.SIGCONT)
            self.cluster.stopped.discard(target.pid)

    # ---- Redis faults ------------------------------------------------------------------

    def _redis_restart(self, fault: Fault, p: dict[str, float]) -> None:
        with self.cluster.lock:
            fsync_before = self.cluster.fsync
            down_s = 0.3 + 1.7 * p["u"]
            # The first restart comes back with appendfsync always, the second with everysec:
            # so one crash hits a server fsyncing every write, the others one every second.
            after = "always" if self._restarts == 0 else "everysec"
            self._restarts += 1
            fault.detail.update(down_s=round(down_s, 2), fsync_killed=fsync_before, fsync_after=after)
            self.cluster.redis.kill()
            time.sleep(down_s)
            self.cluster.fsync = after
            self.cluster.start_redis()

    def _pause(self, fault: Fault, p: dict[str, float]) -> None:
        with self.cluster.lock:
            pause_ms = int(300 + 2700 * p["u"])
            fault.detail["ms"] = pause_ms
            client = self.cluster.client()
            client.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
            client.close()
            time.sleep(pause_ms / 1000)

    def _fill(self, fault: Fault, p: dict[str, float]) -> None:
        """Fill Redis to maxmemory (noeviction): every write is refused for a few seconds (under
        half of worker_lost_timeout, so heartbeats outlive it), then free it all."""
        with self.cluster.lock:
            client = self.cluster.client()
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", used + 4 * 1024 * 1024)
            written = 0
            try:
                while written < 400:
                    client.set(f"chaos:fill:{written}", FILL_CHUNK)
                    written += 1
            except redis.ResponseError as exc:
                fault.detail["refused"] = str(exc)[:60]
            hold_s = 1 + (self.cluster.lost_timeout_s / 2 - 1) * p["u"]
            fault.detail.update(filler_keys=written, hold_s=round(hold_s, 2))
            time.sleep(hold_s)
            if written:
                client.delete(*[f"chaos:fill:{i}" for i in range(written)])
            client.config_set("maxmemory", 0)
            client.close()

    # ---- network faults (the proxy) ----------------------------------------------------

    def _cut(self, fault: Fault, p: dict[str, float]) -> None:
        self.cluster.tell_proxy("cut")

    def _delay(self, fault: Fault, p: dict[str, float]) -> None:
        delay_s, for_s = 0.02 + 0.28 * p["u"], 2 + 4 * p["v"]
        fault.detail.update(delay_s=round(delay_s, 3), for_s=round(for_s, 2))
        self.cluster.tell_proxy(f"delay {delay_s} {for_s}")
        time.sleep(for_s)

    def _stall(self, fault: Fault, p: dict[str, float]) -> None:
        """Hold every byte for 0.5 to 1.5 x worker_lost_timeout: past it, every worker's
        heartbeat lapses and each is presumed dead by the others."""
        for_s = self.cluster.lost_timeout_s * (0.5 + p["u"])
        fault.detail["for_s"] = round(for_s, 2)
        self.cluster.tell_proxy(f"stall {for_s}")
        time.sleep(for_s)
