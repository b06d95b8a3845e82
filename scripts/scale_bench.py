#!/usr/bin/env python
"""What one Redis spends on greenq, measured for docs/scaling.md (issue 23, item 6).

    nice -n 10 python scripts/scale_bench.py memory [--messages 1000000] [--celery 1000000]
    nice -n 10 python scripts/scale_bench.py cpu [--tasks 50000]
    nice -n 10 python scripts/scale_bench.py cluster [--tasks 20000]

``memory``: enqueues ``--messages`` waiting messages whose body is 200 bytes into one queue of a
fresh redis-server (the bundled 6.2) and reads ``INFO memory`` (``used_memory``) before and
after and ``MEMORY USAGE`` of the stream; times ``admin.status`` (what ``greenq status`` reads)
at that size; then the same for Celery's Redis transport (kombu: one list per queue), the same
task call sent with ``send_task``.
``cpu``: Redis CPU per task (``INFO cpu``, and ``INFO commandstats`` per command) to enqueue
``--tasks`` tasks, then for a gevent worker ``-c 500`` to drain them: early ack without result,
early ack with a result, late ack with a result (tests/scale/scale_app.py, bodies that do nothing).
``cluster``: one worker draining ``--tasks`` result-less tasks from one node, then from a
3-master cluster on the same machine (tests/scale/servers.py), tasks/s and the total Redis CPU.
Every server and worker is stopped by PID; each phase is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from greenq import GreenQ, admin  # noqa: E402
from greenq.embedded import RedisServer, bundled_binary  # noqa: E402

TASK = "tests.scale.scale_app.bare"


def payload_for(app: GreenQ, size: int = 200) -> str:
    """An argument that makes the encoded message body exactly ``size`` bytes."""
    text = ""
    while True:
        _, body = app.build_message(TASK, [text])
        if len(body) >= size:
            return text
        text += "x" * (size - len(body))


def cpu_s(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commandstats(r: Any) -> dict[str, tuple[int, float]]:
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for k, v in r.info("commandstats").items()
    }


def memory(args: argparse.Namespace) -> None:
    server = RedisServer(bundled_binary()).start()
    try:
        r = redis.Redis.from_url(server.url)
        app = GreenQ("scale", broker=server.url)
        for kind, payload in (("200-byte body", payload_for(app)), ("200-byte argument", "x" * 200)):
            r.flushall()
            base = int(r.info("memory")["used_memory"])
            started = time.monotonic()
            for start in range(0, args.messages, 10_000):
                app.enqueue_many([(TASK, [payload], None)] * min(10_000, args.messages - start))
            took = time.monotonic() - started
            used = int(r.info("memory")["used_memory"]) - base
            stream = int(r.memory_usage("greenq:{q:default}:stream", samples=0))
            timings = []
            for _ in range(5):
                t = time.perf_counter()
                admin.status(app.broker)
                timings.append((time.perf_counter() - t) * 1000)
            body = len(app.build_message(TASK, [payload])[1])
            print(
                f"greenq, {kind} (body {body} B): {args.messages:,} waiting, enqueued in {took:.1f} s: "
                f"used_memory +{used / args.messages:.0f} B/message, MEMORY USAGE of the stream "
                f"{stream / args.messages:.0f} B/message; admin.status "
                f"{min(timings):.1f}-{max(timings):.1f} ms",
                flush=True,
            )
            if args.celery:
                celery_memory(r, server.url, payload, args.celery)
    finally:
        server.stop()


def celery_memory(r: Any, url: str, payload: str, count: int) -> None:
    """Celery sends 1,000 of the calls itself (about 2,000/s here); the rest of ``count`` are
    copies of those messages pushed in pipelines: a list keeps each element's bytes as they are,
    so the memory is the same as for ``count`` sent one by one."""
    from celery import Celery

    r.flushall()
    base = int(r.info("memory")["used_memory"])
    app = Celery("scale", broker=url)
    app.conf.update(task_serializer="json", broker_pool_limit=1)
    sent = min(count, 1000)
    with app.producer_or_acquire() as producer:
        for _ in range(sent):
            app.send_task(TASK, args=[payload], producer=producer)
    real = r.lrange("celery", 0, -1)
    pipe = r.pipeline(transaction=False)
    for index in range(count - sent):
        pipe.lpush("celery", real[index % len(real)])
        if index % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    used = int(r.info("memory")["used_memory"]) - base
    listed = int(r.memory_usage("celery", samples=0))
    print(
        f"celery (kombu Redis transport, a list): {count:,} waiting: used_memory "
        f"+{used / count:.0f} B/message, MEMORY USAGE of the list {listed / count:.0f} B/message, "
        f"one message {len(real[0])} bytes",
        flush=True,
    )


def start_worker(url: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    clean |= {"GREENQ_BROKER_URL": url, "GREENQ_WORKER_CPU_WORKERS": "0", "GREENQ_WORKER_LOG_TASKS": "false"}
    clean |= {"PYTHONPATH": str(ROOT), "COUNTER_URL": "redis://127.0.0.1:1/0", **(env or {})}
    worker = subprocess.Popen(
        [sys.executable, "-m", "greenq", "worker", "-A", "tests.scale.scale_app", "-P", "gevent", *args],
        cwd=ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert worker.stdout is not None
    for line in worker.stdout:
        if "worker ready" in line:
            threading.Thread(target=worker.stdout.read, daemon=True).start()
            return worker
    raise RuntimeError("worker exited before it was ready")


def drain(r: Any, streams: list[str], deadline: float) -> None:
    """Until every stream is empty and nothing is pending (acked entries are deleted)."""
    while any(r.xlen(s) for s in streams):
        if time.monotonic() > deadline:
            raise RuntimeError("the drain did not finish in time")
        time.sleep(0.02)


def cpu(args: argparse.Namespace) -> None:
    server = RedisServer(bundled_binary()).start()
    try:
        r = redis.Redis.from_url(server.url)
        app = GreenQ("scale", broker=server.url)
        payload = payload_for(app)
        n = args.tasks
        for name, task in (
            ("early ack, no result", "bare"),
            ("early ack, result", "bare_result"),
            ("late ack, result", "bare_late"),
        ):
            r.flushall()
            r.config_resetstat()
            c0 = cpu_s(r)
            for _ in range(n // 10):  # one call, one round trip, as a web request sends one task
                app.send_task(f"tests.scale.scale_app.{task}", [payload])
            single = (cpu_s(r) - c0) / (n // 10) * 1e6
            r.flushall()
            c0 = cpu_s(r)
            app.enqueue_many([(f"tests.scale.scale_app.{task}", [payload], None)] * n)
            enqueue = (cpu_s(r) - c0) / n * 1e6
            before, c1 = commandstats(r), cpu_s(r)
            worker = start_worker(server.url, ["-c", "500", "-l", "INFO"])
            started = time.monotonic()
            try:
                drain(r, ["greenq:{q:default}:stream"], started + args.timeout)
                took = time.monotonic() - started
                spent = (cpu_s(r) - c1) / n * 1e6
            finally:
                worker.kill()
                worker.wait(10)
            after = commandstats(r)
            rows = sorted(
                (
                    (k, after[k][0] - before.get(k, (0, 0.0))[0], after[k][1] - before.get(k, (0, 0.0))[1])
                    for k in after
                ),
                key=lambda row: -row[2],
            )
            detail = ", ".join(
                f"{k} {calls / n:.2f}x {usec / n:.1f} us" for k, calls, usec in rows[:8] if calls
            )
            print(
                f"{name}: enqueue {single:.1f} us of Redis CPU per task one by one, {enqueue:.1f} us "
                f"pipelined (map); worker drain "
                f"{spent:.1f} us per task ({n / took:,.0f} tasks/s); per task by command: {detail}",
                flush=True,
            )
    finally:
        server.stop()


def cluster(args: argparse.Namespace) -> None:
    from tests.scale.servers import Cluster

    n = args.tasks
    server = RedisServer(bundled_binary()).start()
    try:
        r = redis.Redis.from_url(server.url)
        run_drain("one node", server.url, [r], n, args.timeout)
    finally:
        server.stop()
    nodes = Cluster(3).start()
    try:
        clients = [redis.Redis(port=p) for p in nodes.master_ports]
        run_drain("3-master cluster, one queue", nodes.url, clients, n, args.timeout, nodes.client())
        nodes.client().flushall()
        run_drain(
            "3-master cluster, the queue in 6 shards", nodes.url, clients, n, args.timeout, nodes.client(), 6
        )
    finally:
        nodes.stop()


def run_drain(
    name: str, url: str, servers: list[Any], n: int, timeout: float, lengths: Any = None, shards: int = 0
) -> None:
    app = GreenQ("scale", broker=url, queue_shards={"default": shards} if shards else None)
    payload = payload_for(app)
    app.enqueue_many([(TASK, [payload], None)] * n)
    c0 = sum(cpu_s(s) for s in servers)
    env = {"GREENQ_QUEUE_SHARDS": f'{{"default": {shards}}}'} if shards else {}
    worker = start_worker(url, ["-c", "500", "-l", "INFO"], env)
    started = time.monotonic()
    streams = ["greenq:{q:default}:stream", *(f"greenq:{{q:default#{i}}}:stream" for i in range(shards))]
    try:
        drain(lengths or servers[0], streams, started + timeout)
        took = time.monotonic() - started
    finally:
        worker.kill()
        worker.wait(10)
    spent = (sum(cpu_s(s) for s in servers) - c0) / n * 1e6
    print(
        f"{name}: {n / took:,.0f} tasks/s drained by one worker -c 500; Redis CPU {spent:.1f} us per task",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["memory", "cpu", "cluster"])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--celery", type=int, default=1_000_000, help="0: skip Celery")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    {"memory": memory, "cpu": cpu, "cluster": cluster}[args.what](args)


if __name__ == "__main__":
    main()
