"""Distributed Redis for the scale tests, started from the redis-server binary the suite uses.

``SentinelGroup``: one master, one replica and three sentinels. ``Cluster``: masters (each
with an optional replica) joined with ``CLUSTER ADDSLOTSRANGE``/``MEET``/``REPLICATE`` by hand,
so no ``redis-cli --cluster`` is needed. Every process listens on a free port of 127.0.0.1,
is awaited on its log (no sleeping) and stopped by PID.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from greenq.embedded import bundled_binary, free_port, system_binary

SERVICE = "mymaster"


def binary() -> str:
    found = bundled_binary() or system_binary()
    assert found, "no redis-server binary"
    return found


def until(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` (a state only Redis can tell, e.g. a role or an election) until it is true."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except (redis.ConnectionError, redis.ResponseError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Process:
    """A redis-server (or sentinel) child, ready once its log shows ``ready``."""

    def __init__(self, args: list[str], ready: bytes, cwd: str, timeout_s: float = 15.0) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
        assert self.proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args[0]} exited: {seen.decode(errors='replace')[-2000:]}")
            seen += line
            if ready in line:
                threading.Thread(
                    target=self.proc.stdout.read, daemon=True
                ).start()  # never block on a full pipe
                return
        self.stop()
        raise RuntimeError(f"{args} not ready: {seen.decode(errors='replace')[-2000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def data_node(port: int, folder: str, *extra: str) -> Process:
    args = [binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--protected-mode", "no", "--dir", folder, *extra]
    return Process(args, b"Ready to accept connections", folder)


class SentinelGroup:
    """One master, one replica, three sentinels (quorum 2) watching ``SERVICE``."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="greenq-sentinel-")
        self.ports = {"master": free_port(), "replica": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: list[Process] = []

    def start(self) -> SentinelGroup:
        master, replica = self.ports["master"], self.ports["replica"]
        self.processes.append(data_node(master, self.folder))
        self.processes.append(data_node(replica, self.folder, "--replicaof", "127.0.0.1", str(master)))
        client = redis.Redis(port=master)
        client.set("greenq-test:sync", 1)
        assert client.execute_command("WAIT", 1, 15000) == 1, "the replica did not sync"
        for port in self.sentinel_ports:
            conf = Path(self.folder) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
            )
            self.processes.append(
                Process([binary(), str(conf), "--sentinel"], b"+monitor master", self.folder)
            )
        until(self._sees_replica, what="the sentinels to see the replica")
        return self

    def _sees_replica(self) -> bool:
        for port in self.sentinel_ports:
            replicas = redis.Redis(port=port, decode_responses=True).sentinel_slaves(SERVICE)
            if not any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas):
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        reply = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return int(reply[1])

    def failover(self) -> int:
        """``SENTINEL FAILOVER`` and wait until every sentinel names the new master; its port."""
        old = self.master_port()
        redis.Redis(port=self.sentinel_ports[0]).sentinel_failover(SERVICE)
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port)
            until(
                lambda s=sentinel: int(s.sentinel_get_master_addr_by_name(SERVICE)[1]) != old,
                what="the sentinels to name a new master",
            )
        return self.master_port()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
