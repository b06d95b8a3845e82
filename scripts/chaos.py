"""The chaos run: a busy greenq under many faults at once, every task checked against
docs/semantics.md (issue 24; figures in docs/reliability.md).

    nice -n 10 python3 scripts/chaos.py --minutes 30 --seed 2024
    python3 scripts/chaos.py --seconds 60 --seed 7          # the CI version (tests/test_chaos.py)

Starts a Redis with AOF (the broker), a TCP proxy that the workers reach it through, and a fleet
of real workers (gevent, prefork, hybrid, a ``--processes 2`` group); producers enqueue a mix for
the given time while the injector SIGKILLs, SIGSTOPs and replaces workers, restarts Redis, cuts,
delays and stalls connections, pauses Redis and fills it to maxmemory. Then it stops the faults
and the producers, lets everything drain, and checks each task's history (scripts/chaos/checker.py).
Prints a table and the seed; exits 1 on any violation. Everything it starts it stops, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from chaos.checker import Checker, rss_growth  # noqa: E402
from chaos.cluster import Cluster, Worker  # noqa: E402
from chaos.faults import Injector  # noqa: E402
from chaos.load import Load  # noqa: E402

from greenq.broker.keys import GROUP, Keys  # noqa: E402
from greenq.message import READY_STATES  # noqa: E402

# "*" marks an anchor: never SIGKILLed, its memory is watched for the whole run.
DEFAULT_FLEET = "gevent*,gevent,prefork,hybrid*,multi"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=float)
    parser.add_argument("--seed", type=int, help="default: random (printed)")
    parser.add_argument("--rate", type=float, default=40.0, help="enqueues per second, all producers")
    parser.add_argument("--fault-every", type=float, default=8.0, help="mean seconds between faults")
    parser.add_argument("--lost-timeout", type=float, default=3.0, help="worker_lost_timeout, seconds")
    parser.add_argument(
        "--fleet", default=DEFAULT_FLEET, help=f"worker kinds, * = anchor (default {DEFAULT_FLEET})"
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--out", help="run directory (default: a new temporary one)")
    parser.add_argument("--json", help="also write the report here")
    return parser.parse_args(argv)


def sample_rss(cluster: Cluster, stop: threading.Event, samples: dict[str, list[tuple[float, int]]]) -> None:
    anchors = [w for w in cluster.workers if w.anchor]
    while not stop.wait(5.0):
        for worker in anchors:
            samples[worker.name].append((time.time(), cluster.rss(worker)))


def leftovers(client: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for key in Keys.bands("default"):
        if client.exists(key):
            found[key] = client.xlen(key)
            found[key + " PEL"] = client.xpending(key, GROUP)["pending"]
    found["delayed"] = client.zcard(Keys.delayed("default"))
    return found


def drain(cluster: Cluster, load: Load, timeout_s: float) -> dict[str, int]:
    """Wait until Redis holds no message and every late-ack task sent has a final result."""
    client = cluster.client()
    late_kinds = ("late", "late_eta", "late_retry", "crunch", "unique", "chain")
    late = [r.id for r in load.records if r.kind in late_kinds and r.status == "ok" and r.added]
    deadline = time.monotonic() + timeout_s
    while True:
        left = leftovers(client)
        pending = [i for i in late if i not in load.finals]
        if (not any(left.values()) and not pending) or time.monotonic() > deadline:
            client.close()
            return left
        time.sleep(1.0)


def idle_workers(cluster: Cluster, timeout_s: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Each live worker's last heartbeat once all are idle (or the timeout passed), and the
    names of live worker processes with no heartbeat at all. Read with ``greenq inspect stats``."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "greenq", "inspect", "stats", "--json", "-A", "tests.apps.chaos_app"],
            cwd=ROOT,
            env={**cluster.env(), "GREENQ_BROKER_URL": cluster.direct_url},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        records = list(json.loads(out).values())
        pids = {r["pid"] for r in records}
        silent = [f"{t.worker.name}/{t.pid}" for t in cluster.targets() if t.pid not in pids]
        busy = [r for r in records if r.get("held") or r.get("running") or r.get("busy") or r.get("cpu_busy")]
        if (not busy and not silent) or time.monotonic() > deadline:
            return records, silent
        time.sleep(1.0)


def read_results(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, Any]]:
    import orjson

    client = cluster.client()
    results: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for task_id in chunk:
            pipe.xrange(Keys.result(task_id))  # a task's records, oldest first (a few at most)
        for task_id, entries in zip(chunk, pipe.execute(), strict=True):
            if entries:
                records = [orjson.loads(fields[b"r"]) for _, fields in entries]
                results[task_id] = records[-1]
                # a task run twice has two final records; the listener may have seen only the
                # second (it reads the newest when notified): the chain check needs the first
                finals = [float(r["date_done"]) for r in records if r.get("state") in READY_STATES]
                results[task_id]["first_final_at"] = min(finals, default=None)
    client.close()
    return results


def read_dead(cluster: Cluster) -> tuple[list[dict[str, Any]], int]:
    client = cluster.client()
    entries = client.xrange(Keys.dead("default"))
    dead = [
        {
            "m": f[b"m"],
            "reason": f[b"reason"].decode(errors="replace"),
            "worker": f.get(b"worker", b"").decode(errors="replace"),
            "time": int(f.get(b"time", 0)) / 1000,
        }
        for _, f in entries
    ]
    dropped = int(client.get(Keys.dead_dropped("default")) or 0)
    client.close()
    return dead, dropped


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    duration = args.seconds if args.seconds is not None else 60 * (args.minutes or 2)
    run_dir = Path(args.out or tempfile.mkdtemp(prefix="greenq-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    fleet = [(kind.rstrip("*"), kind.endswith("*")) for kind in args.fleet.split(",")]
    print(f"chaos run: seed {seed}, {duration:g} s, run dir {run_dir}", flush=True)

    # SIGTERM (a CI timeout) unwinds through the finally below, which stops everything started;
    # a second one must not interrupt that.
    def terminated(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(f"chaos run (seed {seed}) terminated")

    signal.signal(signal.SIGTERM, terminated)
    cluster = Cluster(run_dir, fleet, args.lost_timeout)
    env = cluster.env({"CHAOS_TICK_S": "2"})
    samples: dict[str, list[tuple[float, int]]] = {w.name: [] for w in cluster.workers if w.anchor}
    stop_sampling = threading.Event()
    codes: dict[str, int | None] = {}
    try:
        cluster.start_redis()
        cluster.start_proxy()
        os.environ["GREENQ_BROKER_URL"] = cluster.direct_url
        for worker in cluster.workers:
            cluster.start_worker(worker, env)
        cluster.wait_ready()

        def replace(worker: Worker) -> None:
            cluster.start_worker(worker, env)

        load = Load(cluster.direct_url, args.rate, seed)
        injector = Injector(cluster, seed, args.fault_every, replace)
        sampler = threading.Thread(target=sample_rss, args=(cluster, stop_sampling, samples), daemon=True)
        started = time.time()
        sampler.start()
        load.start()
        injector.start()
        time.sleep(duration)
        injector.finish()
        load.finish()
        print(f"faults and load stopped after {time.time() - started:.0f} s; draining", flush=True)
        left = drain(cluster, load, args.drain_timeout)
        workers_end, silent = idle_workers(cluster, 4 * args.lost_timeout + 10)
        stop_sampling.set()
        load.stop_listening()
        results = read_results(cluster, [r.id for r in load.records])
        dead, dropped = read_dead(cluster)
        capacities = {w.name: cluster.capacity_of(w) for w in cluster.workers}
    finally:
        stop_sampling.set()
        codes = cluster.stop_all(graceful_s=40)
    data = {
        "records": [asdict(r) for r in load.records],
        "finals": load.finals,
        "results": results,
        "dead": dead,
        "dead_dropped": dropped,
        "leftovers": left,
        "faults": [asdict(f) for f in injector.faults],
        "workers_end": workers_end,
        "silent_workers": silent,
        "exit_codes": codes,
        "capacities": capacities,
        "lost_timeout_s": args.lost_timeout,
    }
    verdict = Checker(data, run_dir).run()
    warmup = min(120.0, duration / 5)
    verdict.figures["rss"] = rss_growth(samples, warmup)
    verdict.figures.update(
        duration_s=round(duration), seed=seed, command=shlex.join(["scripts/chaos.py", *sys.argv[1:]])
    )
    print(render(verdict.figures, verdict.violations))
    report = {"figures": verdict.figures, "violations": verdict.violations, "faults": data["faults"]}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    print(f"seed {seed}; {'FAILED' if verdict.violations else 'passed'}; run dir {run_dir}")
    return 1 if verdict.violations else 0


def render(figures: dict[str, Any], violations: list[str]) -> str:
    rss = figures.get("rss", {})
    growth = max((v["growth_mib_per_h"] for v in rss.values()), default=0.0)
    peak = max((v["peak_mib"] for v in rss.values()), default=0.0)
    faults = figures.get("faults", {})
    rows = [
        ("duration", f"{figures['duration_s'] / 60:.1f} min"),
        ("tasks enqueued", f"{figures['tasks']:,} ({figures['tasks_by_status']})"),
        ("task runs", f"{figures['runs']:,}"),
        (
            "faults injected",
            f"{sum(faults.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())),
        ),
        ("lost late-ack tasks", str(figures["lost_late"])),
        ("lost early-ack tasks (bound)", f"{figures['lost_early']} (<= {figures['lost_early_bound']})"),
        ("late-ack duplicates (bound)", f"{figures['duplicates']} (<= {figures['duplicate_bound']})"),
        ("late-ack runs of a recovered delivery", str(figures["stale_runs"])),
        ("runs after the final result (explained)", str(figures["runs_after_final_explained"])),
        ("ETA runs early (worst)", f"{figures['eta_early_max_ms']} ms"),
        ("chains (steps), each step after the one before", f"{figures['chains']} ({figures['chain_steps']})"),
        ("dead letters (dropped)", f"{figures['dead_letters']} ({figures['dead_dropped']})"),
        ("stuck workers", str(figures["stuck_workers"])),
        ("lapsed heartbeats logged", str(figures["lapsed_heartbeats"])),
        ("peak RSS / growth of long-lived workers", f"{peak} MiB / {growth} MiB/h"),
        ("violations", str(len(violations))),
        ("seed", str(figures["seed"])),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'':<{width}} | |", f"|{'-' * (width + 2)}|---|"]
    lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
    lines += [f"VIOLATION {v}" for v in violations]
    lines += [f"fault not applied: {e}" for e in figures.get("fault_errors", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(parse_args(None)))
