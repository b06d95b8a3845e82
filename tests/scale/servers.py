"""Distributed Redis for the scale tests, started from the redis-server binary the suite uses.

``SentinelGroup``: one master, one replica and three sentinels. ``Cluster``: masters (each
with an optional replica) joined with ``CLUSTER ADDSLOTSRANGE``/``MEET``/``REPLICATE`` by hand,
so no ``redis-cli --cluster`` is needed. Every process listens on a free port of 127.0.0.1,
is awaited on its log (no sleeping) and stopped by PID.
"""

from __future__ import annotations

import random
import socket
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


def cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too (so at most 55,535)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


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


class Cluster:
    """``masters`` Redis Cluster masters sharing the 16,384 slots evenly, each with ``replicas``
    replicas, joined by hand (``CLUSTER ADDSLOTS``, ``MEET``, ``REPLICATE``)."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.folder = tempfile.mkdtemp(prefix="greenq-cluster-")
        self.master_ports = [cluster_port() for _ in range(masters)]
        self.replica_ports = [cluster_port() for _ in range(masters * replicas)]
        self.replicas = replicas
        self.processes: dict[int, Process] = {}

    def _node(self, port: int) -> Process:
        folder = Path(self.folder) / str(port)
        folder.mkdir(exist_ok=True)
        return data_node(
            port,
            str(folder),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        )

    def start(self) -> Cluster:
        ports = self.master_ports + self.replica_ports
        for port in ports:
            self.processes[port] = self._node(port)
        per = 16384 // len(self.master_ports)
        for index, port in enumerate(self.master_ports):
            last = 16383 if index == len(self.master_ports) - 1 else (index + 1) * per - 1
            redis.Redis(port=port).execute_command("CLUSTER", "ADDSLOTS", *range(index * per, last + 1))
        first = redis.Redis(port=ports[0])
        for port in ports[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        until(lambda: all(self._knows_all(p) for p in ports), what="the nodes to meet")
        for index, port in enumerate(self.replica_ports):
            master = self.master_ports[index // self.replicas]
            node_id = redis.Redis(port=master).execute_command("CLUSTER", "MYID")
            redis.Redis(port=port).execute_command("CLUSTER", "REPLICATE", node_id)
        until(lambda: all(self._ok(p) for p in ports), what="cluster_state:ok everywhere")
        if self.replica_ports:
            until(self._replicas_synced, what="the replicas to sync")
        return self

    def _knows_all(self, port: int) -> bool:
        nodes = redis.Redis(port=port).execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        return len([line for line in text.splitlines() if line.strip()]) == len(self.processes)

    def _ok(self, port: int) -> bool:
        info = redis.Redis(port=port).execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def _replicas_synced(self) -> bool:
        return all(
            redis.Redis(port=p).info("replication").get("master_link_status") == "up"
            for p in self.replica_ports
        )

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.master_ports)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.master_ports[0])

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def master_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        node = self.client().get_node_from_key(key)
        return int(node.port)

    def kill(self, port: int) -> None:
        self.processes[port].kill()

    def wait_replicated(self) -> None:
        """Until every replica has all its master has written so far."""
        for port in self.master_ports:
            if self.processes[port].proc.poll() is not None:
                continue
            offset = int(redis.Redis(port=port).info("replication")["master_repl_offset"])

            def caught_up(master: int = port, target: int = offset) -> bool:
                info = redis.Redis(port=master).info("replication")
                replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                return bool(replicas) and all(int(v["offset"]) >= target for v in replicas)

            until(caught_up, what=f"the replica of {port} to catch up")
