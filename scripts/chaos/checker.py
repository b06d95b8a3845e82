"""Every task's history against docs/semantics.md, and the figures of the run.

Reads what the producers sent, what the task bodies wrote to the ledger (one line per start and
end of a run), when each result first became final (the listener), and what Redis holds at the
end (results, dead letters, leftovers). A *violation* breaks a promise of docs/semantics.md; the
run fails on any. Duplicates of late-ack runs are allowed, but each must be explained by a fault
that presumed a worker dead (SIGKILL, SIGSTOP past worker_lost_timeout, a stall past it, or a
worker that logged its own lapsed heartbeat), and their number must stay within the bound: the
capacity (prefetch x concurrency) of each worker so presumed.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

LATE = {"late", "late_eta", "late_retry", "crunch", "unique", "chain"}
EARLY = {"early", "early_eta", "early_retry", "doomed"}
DEAD_REASONS = ("malformed message", "unknown task", "failed: ValueError", "killed its worker")
LOG_LINE = re.compile(r"^\[\S+ \S+ (?P<level>\w+)/(?P<pid>\d+)\]")


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, what: str, examples: list[Any]) -> None:
        shown = ", ".join(str(e) for e in examples[:5])
        self.violations.append(f"{what}: {len(examples)} ({shown}{', ...' if len(examples) > 5 else ''})")


def consumer_pid(consumer: str | None) -> int | None:
    parts = (consumer or "").split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        lines.extend(orjson.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip())
    return lines


def scan_logs(run_dir: Path) -> tuple[set[int], list[str], int]:
    """(pids that logged a lapsed heartbeat, loop crashes, tracebacks) from the worker logs."""
    lapsed: set[int] = set()
    crashes: list[str] = []
    tracebacks = 0
    for path in sorted(run_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if "heartbeat had expired" in line and match:
                lapsed.add(int(match["pid"]))
            if "crashed; restarting it" in line:
                crashes.append(f"{path.name}: {line[:160]}")
            if line.startswith("Traceback"):
                tracebacks += 1
    return lapsed, crashes, tracebacks


class Checker:
    def __init__(self, data: dict[str, Any], run_dir: Path) -> None:
        self.d = data
        self.run_dir = run_dir
        self.v = Verdict()
        self.sent = {r["id"]: r for r in data["records"]}
        self.runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in read_ledger(run_dir / "ledger"):
            if line["ev"] == "start":
                self.runs[line["id"]].append(line)
        self.ends: dict[tuple[str, int], list[float]] = defaultdict(list)
        for line in read_ledger(run_dir / "ledger"):
            if line["ev"] == "end":
                self.ends[(line["id"], line["r"])].append(line["t"])
        self.lapsed, self.crashes, self.tracebacks = scan_logs(run_dir)
        lost = self.d["lost_timeout_s"]
        faults = data["faults"]
        self.presumed = {f["pid"] for f in faults if f["kind"] in ("kill", "zombie") and f["pid"]}
        self.presumed |= self.lapsed
        self.long_stalls = [f for f in faults if f["kind"] == "stall" and f["detail"].get("for_s", 0) > lost]
        self.blackouts = [f for f in faults if f["kind"] in ("stall", "pause", "fill", "redis_restart")]
        self.explained_ids: set[str] = set()  # tasks with a late-ack attempt run twice, explained
        # chain step id -> the step before it: a step that ran twice writes its result, and so
        # sends the next step, twice (at least once, docs/workflows.md)
        self.before: dict[str, str] = {}
        chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in data["records"]:
            if record.get("chain"):
                chains[record["chain"]].append(record)
        self.chains = [sorted(steps, key=lambda r: r["step"]) for steps in chains.values()]
        for steps in self.chains:
            self.before.update((after["id"], before["id"]) for before, after in itertools.pairwise(steps))

    def run(self) -> Verdict:
        self.check_runs()
        self.check_results()
        self.check_eta()
        self.check_chains()
        self.check_unique()
        self.check_dead_letters()
        self.check_end_state()
        self.figures()
        return self.v

    # ---- runs ----------------------------------------------------------------------------

    def explained(self, runs: list[dict[str, Any]]) -> bool:
        """A repeated late-ack attempt is explained if an earlier run's worker was presumed dead
        (killed, stopped, or it logged its lapsed heartbeat), or that run overlapped a fault that
        keeps every worker from its heartbeat (a stall, pause, fill or Redis restart: a worker
        that has not finished a task yet does not log the lapse), or it is a chain step whose
        step before ran twice, explained (steps are checked in order)."""
        if self.before.get(runs[0]["id"]) in self.explained_ids:
            return True
        lost = self.d["lost_timeout_s"]
        for run in runs[:-1]:
            if consumer_pid(run["w"]) in self.presumed:
                return True
            if any(f["t0"] - lost <= run["t"] <= f["t1"] + lost for f in self.blackouts):
                return True
        return False

    def check_runs(self) -> None:
        dup_early, unexplained, strangers, stale = [], [], [], []
        duplicates = 0
        for task_id, runs in self.runs.items():
            record = self.sent.get(task_id)
            if record is None and not task_id.startswith("tick@"):
                strangers.append(task_id)
                continue
            kind = record["kind"] if record else "tick"
            for attempt in _attempts(runs).values():
                if len(attempt) < 2:
                    continue
                if kind in EARLY or kind == "tick":
                    dup_early.append(f"{task_id}/{attempt[0]['r']}")
                    continue
                duplicates += len(attempt) - 1
                if self.explained(attempt):
                    self.explained_ids.add(task_id)
                else:
                    unexplained.append(f"{task_id}/{attempt[0]['r']}")
                stale += _stale(attempt)
        if strangers:
            self.v.fail("runs of tasks nobody enqueued", strangers)
        if dup_early:
            self.v.fail("early-ack (or periodic) attempts that ran twice", dup_early)
        if unexplained:
            self.v.fail("late-ack duplicates no fault explains", unexplained)
        bound = sum(f["capacity"] for f in self.d["faults"] if f["kind"] in ("kill", "zombie") and f["pid"])
        bound += len(self.lapsed) * max(self.d["capacities"].values(), default=0)
        bound += len(self.long_stalls) * sum(self.d["capacities"].values())
        self.v.figures.update(duplicates=duplicates, duplicate_bound=bound, stale_runs=len(stale))
        self.v.figures["stale_run_examples"] = stale[:10]
        if duplicates > bound:
            self.v.fail("late-ack duplicates over the bound", [f"{duplicates} > {bound}"])

    def check_results(self) -> None:
        lost_late, lost_early, changed, after_final = [], [], [], []
        explained_after = 0
        for task_id, record in self.sent.items():
            final = self._final(task_id, record)
            if final is False:
                continue
            if record["kind"] in LATE and not _late_final_ok(final):
                lost_late.append(task_id)
            elif record["kind"] in EARLY and (final is None or final.get("exc_type") == "WorkerLostError"):
                lost_early.append(task_id)
            finals = self.d["finals"].get(task_id, [])
            if len({state for state, _, _ in finals}) > 1:
                changed.append(f"{task_id}:{'>'.join(s for s, _, _ in finals)}")
            if self._ran_after_final(task_id, finals):
                # A worker presumed dead may finish late-ack work after it was recovered: the
                # recovered copy (and, with retries, its whole chain) then runs after the result.
                if task_id in self.explained_ids:
                    explained_after += 1
                else:
                    after_final.append(task_id)
        if lost_late:
            self.v.fail("late-ack tasks lost (no final result)", lost_late)
        if changed:
            self.v.fail("final results that changed state", changed)
        if after_final:
            self.v.fail("runs after the task's result was final, no fault explains", after_final)
        early_bound = sum(f["concurrency"] for f in self.d["faults"] if f["kind"] == "kill" and f["pid"])
        self.v.figures.update(
            lost_late=len(lost_late),
            lost_early=len(lost_early),
            lost_early_bound=early_bound,
            runs_after_final_explained=explained_after,
        )
        if len(lost_early) > early_bound:
            self.v.fail("early-ack tasks lost over the bound (SIGKILLed concurrency)", lost_early)

    def _ran_after_final(self, task_id: str, finals: list[tuple[str, float, str | None]]) -> bool:
        first_final = min((t for _, t, _ in finals), default=None)
        return first_final is not None and any(run["t"] > first_final for run in self.runs.get(task_id, []))

    def _final(self, task_id: str, record: dict[str, Any]) -> dict[str, Any] | bool | None:
        """The task's final result record; None if it has none; False if it is not to be checked
        (poison, refused enqueues, unique duplicates, lost replies of messages never seen)."""
        kind, status = record["kind"], record["status"]
        if kind == "poison" or status == "failed" or (kind == "unique" and not record["added"]):
            return False
        result = self.d["results"].get(task_id)
        if status == "maybe" and task_id not in self.runs and result is None:
            return False
        if result and result["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
            return dict(result)
        return None

    def check_chains(self) -> None:
        """A step starts only once the step before has its final result (the next step is sent in
        the round trip that writes it), and no step after a successful one is lost."""
        early, lost = [], []
        for steps in self.chains:
            for before, after in itertools.pairwise(steps):
                final_at = self._first_final_at(before["id"])
                starts = [run["t"] for run in self.runs.get(after["id"], [])]
                if starts and (final_at is None or min(starts) < final_at):
                    early.append(f"{after['id']} (step {after['step']})")
                before_state = (self.d["results"].get(before["id"]) or {}).get("state")
                after_state = (self.d["results"].get(after["id"]) or {}).get("state")
                if before_state == "SUCCESS" and after_state not in ("SUCCESS", "FAILURE", "REVOKED"):
                    lost.append(f"{after['id']} (step {after['step']})")
        if early:
            self.v.fail("chain steps that started before the step before had its result", early)
        if lost:
            self.v.fail("chain steps lost after the step before succeeded", lost)
        self.v.figures.update(chains=len(self.chains), chain_steps=sum(len(s) for s in self.chains))

    def _first_final_at(self, task_id: str) -> float | None:
        """When the task's first final result was written: the oldest final record of its result
        stream (``read_results``), or the listener's first sighting."""
        times = [t for _, t, _ in self.d["finals"].get(task_id, [])]
        stored = self.d["results"].get(task_id)
        if stored and stored.get("first_final_at") is not None:
            times.append(float(stored["first_final_at"]))
        return min(times, default=None)

    def check_eta(self) -> None:
        early_runs = []
        worst = 0.0
        for runs in self.runs.values():
            for run in runs:
                if run["eta"] is not None and run["t"] < run["eta"]:
                    early_runs.append(f"{run['id']}/{run['r']}:{(run['eta'] - run['t']) * 1000:.3f}ms")
                    worst = max(worst, run["eta"] - run["t"])
        self.v.figures["eta_early_max_ms"] = round(worst * 1000, 3)
        if early_runs:
            self.v.fail("runs that started before their ETA", early_runs)

    def check_unique(self) -> None:
        ran_dup, overlaps = [], []
        by_key: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for record in self.sent.values():
            if record["kind"] != "unique":
                continue
            if not record["added"] and record["id"] in self.runs:
                ran_dup.append(record["id"])
            if record["added"] and record["status"] == "ok":
                by_key[record["key"]].append(record)
        for holders in by_key.values():
            holders.sort(key=lambda r: r["t"])
            for prev, nxt in itertools.pairwise(holders):
                finals = self.d["finals"].get(prev["id"])
                done = min((t for _, t, _ in finals), default=None) if finals else None
                # The key is freed in the flush round of the result; past its TTL it is free anyway.
                if done is not None and nxt["t1"] < done and nxt["t1"] < prev["t"] + 60:
                    overlaps.append(f"{prev['id']}->{nxt['id']}")
        if ran_dup:
            self.v.fail("unique enqueues that added nothing but ran", ran_dup)
        if overlaps:
            self.v.fail("unique keys taken while their holder had not finished", overlaps)

    def check_dead_letters(self) -> None:
        counts: Counter[str] = Counter()
        strange = []
        writers: dict[str, list[str]] = defaultdict(list)
        for entry in self.d["dead"]:
            body, reason = entry["m"], entry["reason"]
            task_id = _dead_id(body)
            if task_id is None or not any(r in reason for r in DEAD_REASONS):
                strange.append(f"{reason[:40]}:{body[:30]!r}")
                continue
            counts[task_id] += 1
            writers[task_id].append(f"{entry['worker']}@{entry['time']:.3f}")
        # Once each, whatever the faults: a worker presumed dead no longer dead-letters what
        # recovery gave another (reject.lua; confirmed by the 30-minute run, docs/reliability.md).
        # A flush round rewritten after its reply was lost still can (Open, same page).
        twice = [f"{t} by {' and '.join(writers[t])}" for t, n in counts.items() if n > 1]
        missing = []
        for task_id, record in self.sent.items():
            if record["kind"] == "poison" and record["status"] == "ok" and counts[task_id] == 0:
                missing.append(task_id)
            if record["kind"] == "doomed" and counts[task_id] == 0:
                ended = bool(self.ends.get((task_id, 0)))
                runners = {consumer_pid(r["w"]) for r in self.runs.get(task_id, [])}
                if ended and not runners & self.presumed:
                    missing.append(task_id)
        self.v.figures.update(dead_letters=len(self.d["dead"]), dead_dropped=self.d["dead_dropped"])
        if strange:
            self.v.fail("dead letters with no known task or reason", strange)
        if twice:
            self.v.fail("messages dead-lettered more than once", twice)
        if missing:
            self.v.fail("poison or failed messages with no dead letter", missing)
        if self.d["dead_dropped"]:
            self.v.fail("dead letters dropped under the cap", [self.d["dead_dropped"]])

    def check_end_state(self) -> None:
        left = {k: v for k, v in self.d["leftovers"].items() if v}
        if left:
            self.v.fail("messages left in Redis after the drain", [f"{k}={v}" for k, v in left.items()])
        stuck = [
            f"{w['consumer']}:held={w.get('held')},running={w.get('running')},busy={w.get('busy')}"
            for w in self.d["workers_end"]
            if w.get("held") or w.get("running") or w.get("busy") or w.get("active")
        ]
        stuck += [f"{name}: no heartbeat" for name in self.d["silent_workers"]]
        self.v.figures["stuck_workers"] = len(stuck)
        if stuck:
            self.v.fail("workers not idle at the end", stuck)
        bad_exit = [f"{name}={code}" for name, code in self.d["exit_codes"].items() if code != 0]
        if bad_exit:
            self.v.fail("workers that did not stop cleanly on SIGTERM", bad_exit)
        if self.crashes:
            self.v.fail("worker loops that crashed", self.crashes)

    def figures(self) -> None:
        sent = list(self.sent.values())
        self.v.figures.update(
            tasks=len(sent),
            tasks_by_status=dict(Counter(r["status"] for r in sent)),
            runs=sum(len(r) for r in self.runs.values()),
            faults=dict(Counter(f["kind"] for f in self.d["faults"] if "skipped" not in f["detail"])),
            fault_errors=[
                f"{f['kind']}: {f['detail']['error']}" for f in self.d["faults"] if "error" in f["detail"]
            ],
            lapsed_heartbeats=len(self.lapsed),
            tracebacks_in_logs=self.tracebacks,
        )


def _late_final_ok(final: dict[str, Any] | None) -> bool:
    if final is None:
        return False
    if final["state"] == "SUCCESS":
        return True
    # documented: dead-lettered after its delivery killed max_deliveries workers
    return final.get("exc_type") == "DeadLettered" and "killed" in (final.get("exc_message") or "")


def _stale(attempt: list[dict[str, Any]]) -> list[str]:
    """Runs of an older delivery that started after a newer delivery of the same attempt had
    started: a worker ran a message it held after recovery had handed it to another."""
    stale, newest = [], 0
    for run in attempt:  # by start time
        if run["d"] < newest:
            stale.append(f"{run['id']}/{run['r']}/d{run['d']}")
        newest = max(newest, run["d"])
    return stale


def _attempts(runs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """A task's runs by attempt (``retries``), each by start time."""
    attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r["t"]):
        attempts[run["r"]].append(run)
    return attempts


def _dead_id(body: bytes) -> str | None:
    """The task id of a dead-lettered body: its ``id`` field, or the marker a poison body starts with."""
    try:
        envelope = orjson.loads(body)
        return str(envelope["id"]) if isinstance(envelope, dict) and "id" in envelope else None
    except orjson.JSONDecodeError:
        marker = body.split(b" ", 1)[0]
        return marker.decode(errors="replace") if marker.startswith(b"poison-") else None


def rss_growth(samples: dict[str, list[tuple[float, int]]], warmup_s: float) -> dict[str, Any]:
    """Per long-lived worker: peak RSS, and growth per hour as the least-squares slope of its
    RSS after ``warmup_s`` (MiB/h); the largest slope is the run's figure."""
    out: dict[str, Any] = {}
    for name, points in samples.items():
        if not points:
            continue
        start = points[0][0]
        tail = [(t, rss) for t, rss in points if t - start >= warmup_s and rss] or points
        n = len(tail)
        mean_t = sum(t for t, _ in tail) / n
        mean_r = sum(r for _, r in tail) / n
        var = sum((t - mean_t) ** 2 for t, _ in tail)
        slope = sum((t - mean_t) * (r - mean_r) for t, r in tail) / var if var else 0.0
        out[name] = {
            "peak_mib": round(max(r for _, r in points) / 2**20, 1),
            "growth_mib_per_h": round(slope * 3600 / 2**20, 1),
        }
    return out
