"""Writes ``docs/loadtests.md`` and its PNG charts from the figures ``loadtests/run.py`` collected.

``python loadtests/report.py`` rebuilds the page from ``docs/loadtests/results.json`` (e.g. after
editing this layout) without running anything again. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
HTTP_DELAY_S = 0.1
COLORS = {"http": "#2b7bb9", "cpu": "#d9822b"}


# ---- figures derived from one scenario -----------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (scenario, task kind) with everything the table and charts show."""
    out = []
    body_s = results["cpu_body_ms"] / 1000
    for result in results["scenarios"]:
        scenario = result["scenario"]
        usage = result["usage"]
        for name, stats in result["stats"].items():
            kind_type, kind = name.split(" ", 1)
            if kind_type != "complete":
                continue
            enqueue = result["stats"].get(f"enqueue {kind}", {})
            body_ms = result["stats"].get(f"body {kind}", {}).get("avg_ms") or None
            out.append(
                {
                    "key": scenario["key"],
                    "title": scenario["title"],
                    "worker": result["worker"],
                    "kind": kind,
                    "users": users_of(scenario, kind),
                    "ideal": ideal_rate(
                        scenario,
                        kind,
                        body_ms / 1000 if body_ms else body_s,
                        result.get("hybrid_active", False),
                    ),
                    "body_ms": body_ms,
                    "rps": stats["rps"] or 0.0,
                    "count": stats["count"],
                    "p50": stats["p50_ms"],
                    "p95": stats["p95_ms"],
                    "p99": stats["p99_ms"],
                    "errors": stats["failures"] + enqueue.get("failures", 0),
                    "enqueue_p50": enqueue.get("p50_ms"),
                    "worker_cpu": usage["cpu_pct"].get("worker", 0.0),
                    "worker_rss": usage["peak_main_rss_mb"].get("worker", 0.0),
                    "worker_tree_rss": usage["peak_rss_mb"].get("worker", 0.0),
                    "worker_procs": usage["procs"].get("worker", 1),
                }
            )
    return out


def users_of(scenario: dict[str, Any], kind: str) -> int:
    if scenario["kind"] != "mixed":
        return int(scenario["users"])
    return int(scenario["cpu_users"] if kind == "cpu" else scenario["users"] - scenario["cpu_users"])


def ideal_rate(scenario: dict[str, Any], kind: str, body_s: float, hybrid_active: bool) -> float:
    """Completed/s if nothing but the task body took time: HTTP bodies wait the target's 100 ms (and
    need no CPU), CPU bodies take ``body_s`` (as measured in the worker) on one core each."""
    users = users_of(scenario, kind)
    if kind == "http":
        return min(users, scenario["concurrency"]) / HTTP_DELAY_S
    if scenario["pool"] == "prefork":
        parallel = min(users, scenario["concurrency"], 2)
    elif scenario.get("hybrid") and hybrid_active:
        parallel = min(users, 2)
    else:
        parallel = 1  # greenlets share one core
    return parallel / body_s


# ---- markdown ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:,.0f}"


def _errors(row: dict[str, Any]) -> str:
    total = row["count"] + row["errors"]
    return "0" if not row["errors"] else f"{row['errors']:,} ({100 * row['errors'] / max(1, total):.0f} %)"


def _rss(row: dict[str, Any]) -> str:
    text = f"{row['worker_rss']:.0f} MB"
    if row["worker_procs"] > 1:
        text += f" ({row['worker_procs']} procs: {row['worker_tree_rss']:.0f} MB)"
    return text


def results_table(table_rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Scenario | Worker | Task | Users | Completed/s | Ideal/s | Body ms | p50 ms | p95 ms | p99 ms "
        "| Errors | Worker CPU | Worker peak RSS |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    lines.extend(
        f"| {row['key']} | {row['worker']} | {row['kind']} | {row['users']} "
        f"| **{row['rps']:,.1f}** | {row['ideal']:,.0f} | {_ms(row['body_ms'])} | {_ms(row['p50'])} "
        f"| {_ms(row['p95'])} "
        f"| {_ms(row['p99'])} | {_errors(row)} | {row['worker_cpu']:.0f} % | {_rss(row)} |"
        for row in table_rows
    )
    return lines


def processed(result: dict[str, Any]) -> int:
    """Tasks the worker said it processed (its log line at exit)."""
    text = (result.get("worker_processed") or "").split(" processed")[0].replace(",", "")
    return int(text) if text.isdigit() else 0


def per_task_ms(result: dict[str, Any]) -> dict[str, float]:
    """CPU ms per processed task of each process group this run started, and their total."""
    count = processed(result)
    usage = result["usage"]
    if not count:
        return {}
    out = {name: pct / 100 * usage["wall_s"] * 1000 / count for name, pct in usage["cpu_pct"].items()}
    out["total"] = sum(out.values())
    return out


def scenario_result(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The result of one scenario of this run, or None if the run left it out (``--only``)."""
    return next((r for r in results["scenarios"] if r["scenario"]["key"] == key), None)


def http_costs(results: dict[str, Any]) -> dict[str, float]:
    """CPU ms per task of each process group in the plain HTTP scenario, for the prose below."""
    http = scenario_result(results, "http-gevent")
    return per_task_ms(http) if http else {}


def _cost(costs: dict[str, float], name: str) -> str:
    return f"{costs[name]:.2f} ms" if name in costs else "n/a"


def cpu_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Scenario | worker | locust | target | redis | other processes | idle | machine busy just before "
        "| CPU ms per task: worker / locust / target / redis = total | 2-core ceiling |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results["scenarios"]:
        usage = result["usage"]
        cpu = usage["cpu_pct"]
        per = per_task_ms(result)
        per_text = (
            " / ".join(f"{per.get(name, 0):.2f}" for name in ("worker", "locust", "target", "redis"))
            + f" = **{per['total']:.2f}**"
            if per
            else "n/a"
        )
        ceiling = f"{2000 / per['total']:,.0f}/s" if per else "n/a"
        quiet = result.get("quiet")
        before = (
            f"{2 * quiet['busy_pct']:.0f} % (waited {quiet['waited_s']:.0f} s)" if quiet else "not checked"
        )
        lines.append(
            f"| {result['scenario']['key']} | {cpu.get('worker', 0):.0f} % | {cpu.get('locust', 0):.0f} % "
            f"| {cpu.get('target', 0):.0f} % | {cpu.get('redis', 0):.0f} % | {usage['other_cpu_pct']:.0f} % "
            f"| {usage['idle_pct']:.0f} % | {before} | {per_text} | {ceiling} |"
        )
    return lines


def target_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Client | Connections | Delay | Served | Ideal | Errors | Other processes' CPU meanwhile |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    lines.extend(
        f"| {run['tool']} | {run['connections']} | {run['delay_ms']} ms "
        f"| **{run['req_per_s']:,.0f} req/s** | {run['ideal_req_per_s']:,.0f} req/s | {run['errors']} "
        f"| {run['other_cpu_pct']} % |"
        for run in results["target"]
    )
    return lines


def _find(table_rows: list[dict[str, Any]], key: str, kind: str) -> dict[str, Any] | None:
    return next((r for r in table_rows if r["key"] == key and r["kind"] == kind), None)


def observations(results: dict[str, Any], table_rows: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from this run's figures (no claim is written by hand)."""
    notes = []
    crowded = [
        f"`{r['scenario']['key']}` ({r['usage']['other_cpu_pct']:.0f} %)"
        for r in results["scenarios"]
        if r["usage"]["other_cpu_pct"] > 50
    ]
    if crowded:
        notes.append(
            "**Other people's processes took more than half a core during** "
            + ", ".join(crowded)
            + ": those throughputs are lower bounds, and comparisons between scenarios are only as fair "
            "as their 'other processes' columns are alike. CPU ms per task (below) is steadier."
        )
    gevent, prefork = _find(table_rows, "http-gevent", "http"), _find(table_rows, "http-prefork", "http")
    if gevent and prefork and prefork["rps"]:
        notes.append(
            f"HTTP work: the gevent worker completed {gevent['rps']:,.0f} tasks/s against prefork's "
            f"{prefork['rps']:,.1f} ({gevent['rps'] / prefork['rps']:,.0f}x) with {gevent['users']} "
            f"producers waiting; its p50 from enqueue to result was {_ms(gevent['p50'])} ms for a 100 ms GET "
            f"(ideal {gevent['ideal']:,.0f}/s: {100 * gevent['rps'] / gevent['ideal']:.0f} % of it)."
        )
    cpu_pf, cpu_gv = _find(table_rows, "cpu-prefork", "cpu"), _find(table_rows, "cpu-gevent", "cpu")
    if cpu_pf and cpu_gv and cpu_gv["rps"]:
        notes.append(
            f"CPU work: prefork -c 2 completed {cpu_pf['rps']:,.1f} tasks/s "
            f"({100 * cpu_pf['rps'] / cpu_pf['ideal']:.0f} % of the two-core ideal), gevent "
            f"{cpu_gv['rps']:,.1f} ({100 * cpu_gv['rps'] / cpu_gv['ideal']:.0f} % of one core's); "
            f"p99 {_ms(cpu_pf['p99'])} ms vs {_ms(cpu_gv['p99'])} ms."
        )
    notes += _mixed_notes(results, table_rows)
    for result in results["scenarios"]:
        warned = result["hub_warnings"]
        if warned:
            names = ", ".join(f"`{name}` {count:,}x" for name, count in sorted(warned.items()))
            notes.append(
                f"`{result['scenario']['key']}`: the worker logged {sum(warned.values()):,} "
                f"'blocked the event loop' warnings, naming {names}."
            )
    return notes


def _mixed_notes(results: dict[str, Any], table_rows: list[dict[str, Any]]) -> list[str]:
    hybrid_result = scenario_result(results, "mixed-hybrid")
    if hybrid_result is None:
        return []
    notes = []
    if not hybrid_result["hybrid_active"]:
        notes.append(
            "**The hybrid scenario ran without hybrid support**: the worker did not start a child-process "
            "pool for `cpu=True` tasks, so they ran in greenlets like the control."
        )
    hybrid_http, control_http = (
        _find(table_rows, "mixed-hybrid", "http"),
        _find(table_rows, "mixed-gevent", "http"),
    )
    hybrid_cpu, control_cpu = (
        _find(table_rows, "mixed-hybrid", "cpu"),
        _find(table_rows, "mixed-gevent", "cpu"),
    )
    if hybrid_http and control_http and hybrid_cpu and control_cpu:
        notes.append(
            f"Mixed work: with CPU tasks in child processes (hybrid), HTTP tasks completed "
            f"{hybrid_http['rps']:,.0f}/s at p50 {_ms(hybrid_http['p50'])} ms / p99 "
            f"{_ms(hybrid_http['p99'])} ms "
            f"and CPU tasks {hybrid_cpu['rps']:,.1f}/s; with the same CPU tasks in greenlets (control), "
            f"HTTP {control_http['rps']:,.0f}/s at p50 {_ms(control_http['p50'])} ms / p99 "
            f"{_ms(control_http['p99'])} ms and CPU {control_cpu['rps']:,.1f}/s."
        )
    return notes


def scenario_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for result in results["scenarios"]:
        s = result["scenario"]
        users = f"{s['users']} users" + (f" ({s['cpu_users']} of them CPU)" if s["kind"] == "mixed" else "")
        cpu_task = f", CPU task `{s['cpu_task']}`" if s["kind"] in ("cpu", "mixed") else ""
        hybrid = ""
        if s["hybrid"]:
            hybrid = " (hybrid: " + ("child pool started" if result["hybrid_active"] else "NOT active") + ")"
        lines.append(
            f"- `{s['key']}`: {s['title']}. Worker `--pool {s['pool']} -c {s['concurrency']}`"
            f"{hybrid}"
            f"; locust `LT_KIND={s['kind']}`, {users}, spawn rate {s['spawn_rate']}/s{cpu_task}. "
            f"Worker at exit: {result.get('worker_processed') or 'n/a'}."
        )
    return lines


def write(results: dict[str, Any], doc: Path, images: Path) -> None:
    """Write the charts into ``images`` and the page to ``doc``."""
    table_rows = rows(results)
    images.mkdir(parents=True, exist_ok=True)
    charts = {
        "throughput": chart_throughput(table_rows, images / "loadtests-throughput.png"),
        "latency": chart_latency(table_rows, images / "loadtests-latency.png"),
        "cpu": chart_cpu(results, images / "loadtests-cpu.png"),
        "timeline": chart_timeline(results, images / "loadtests-timeline.png"),
    }
    m = results["machine"]
    rel = {name: path.relative_to(doc.parent).as_posix() for name, path in charts.items()}
    failures = [f"- `{r['scenario']['key']}`: {f}" for r in results["scenarios"] for f in r["failures"]]
    costs = http_costs(results)
    quietest = min((r["usage"]["other_cpu_pct"] for r in results["scenarios"]), default=0.0)
    lines = [
        "# Load tests: greenq under locust",
        "",
        "Locust users act as producer services: each one enqueues a greenq task, waits for its result with "
        "`AsyncResult.get()`, and starts over with no think time. `complete` is the time from just before "
        "`delay()` to the result in hand (queueing + execution + result delivery); completed/s is its rate. "
        "See [loadtests/README.md](../loadtests/README.md) for how to run it and read it.",
        "",
        f"- **Command:** `{results['command'].strip()}` ({results['runtime_s']:.0f} s in all, "
        f"{results['scenarios'][0]['duration_s'] if results['scenarios'] else 0} s of locust per scenario; "
        "`--reset-stats` drops the ramp-up)",
        f"- **Date:** {results['date']}",
        f"- **Machine:** {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}), {m['memory_gb']} GB, "
        f"{m['platform']}, Python {m['python']}, redis-server {m['redis_server']} (loopback)",
        "- **Versions:** "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f"; greenq at `{m['greenq_commit']}`",
        f"- **Task bodies:** HTTP = one `requests` GET of the target's `/delay/100`; CPU = "
        f"{results['cpu_body_ms']:.0f} ms of pure-Python CPU (measured in this run)",
        f"- **Load average before the run:** {', '.join(map(str, m['loadavg_before']))}. Everything — "
        "producers (locust), worker, target, Redis — shares the same 2 cores, and on this machine other "
        "people's processes may too: the CPU table says how much they took.",
        "",
        "## Results",
        "",
        *results_table(table_rows),
        "",
        "Body ms: the task body's average time inside the worker, as the task measured it (wall time of "
        "the GET; CPU time of the loop). p50/p95/p99: from just before `delay()` to the result in the "
        "producer's hands. Ideal/s: completed/s if only the task body took time (HTTP: in-flight tasks / "
        "100 ms, capped by the pool's slots; CPU: parallel bodies / body ms, 2 cores for prefork and hybrid "
        "children, 1 for greenlets). Worker CPU is in % of one core (200 % = both cores); RSS is the "
        "worker's main process, with the sum over its child processes in brackets. `run.py` writes "
        "locust's HTML report of each scenario to `loadtests/out/reports/` (generated, not kept in git).",
        "",
        *[f"- {note}" for note in observations(results, table_rows)],
        "",
        f"![completed per second]({rel['throughput']})",
        "",
        f"![latency percentiles]({rel['latency']})",
        "",
        "## Where the CPU went",
        "",
        "Averaged over each locust run, in % of one core (the machine has 200 %). 'other processes' is "
        "the whole machine's busy time minus every process this run started: other people's jobs, plus "
        "kernel threads (some of them doing this run's loopback networking) and run.py's own sampling "
        f"(the quietest scenario of this run: {quietest:.0f} %). CPU ms per task divides each "
        "group's CPU time by the tasks the worker processed; the 2-core ceiling is the completed/s that "
        "budget allows if this run had both cores to itself (2,000 ms of CPU per second / total ms).",
        "",
        *cpu_table(results),
        "",
        f"![CPU by process]({rel['cpu']})",
        "",
        f"![completed per second over time]({rel['timeline']})",
        "",
        "## What bounds these figures",
        "",
        "- **Two cores for everything.** The producers (locust: "
        f"{_cost(costs, 'locust')} of CPU per task in `http-gevent` for `delay()` + `get()` + its own "
        f"stats), the worker ({_cost(costs, 'worker')}), the target ({_cost(costs, 'target')} per "
        f"request) and Redis ({_cost(costs, 'redis')}) share them, so the HTTP scenarios become "
        "CPU-bound before 200 in-flight 100 ms GETs (2,000/s) can be reached. The 'CPU ms per task' "
        "column says what each part costs; the 2-core ceiling is what that budget allows.",
        "- **A shared machine.** Other people's builds and tests ran on the same cores during some "
        "scenarios ('other processes'); their share varies from run to run, and so do the figures. "
        "Compare scenarios by CPU ms per task, which moves far less than throughput, and rerun with "
        "`--wait-quiet` for cleaner numbers.",
        "- **Producer connections.** Each user blocked in `get()` holds one Redis connection. greenq's "
        "producer keeps its own connections (not redis-py's pool, which redis-py 8 caps at 100): up to "
        "`broker_pool_limit` (1,000), beyond which a caller waits for one to come back. 200 users need "
        "no setting; 500 greenlets of one gevent-patched producer, each `delay()` then `get()`, all "
        "succeed with the defaults (505 connections).",
        "- **Hub-block warnings that name `http_get`.** The gevent pool warns when its event loop did "
        "not tick for 0.1 s and blames the task on the stack at that moment. One `http_get` task cost "
        f"the worker {_cost(costs, 'worker')} of CPU in this run, so a warning naming it means the "
        "loop was busy with hundreds of ready greenlets, or "
        "the process was waiting for a core, rather than that task being CPU-bound. `cpu_burn` warnings "
        "are the real thing.",
        "- **Short runs** (`--quick`, 10 s) include locust's start-up in the CPU figures and a backlog "
        "still building up in the prefork HTTP scenario; use the full run for figures.",
        "",
        "## The target alone",
        "",
        "`loadtests/target.py` serves `greenq.demo.target`'s WSGI app from 2 gevent processes "
        f"({_cost(costs, 'target')} of CPU per request in `http-gevent`), with `TCP_NODELAY` on its "
        "listening sockets: "
        "without it, pywsgi's separate writes of headers and body meet the client's delayed ACK and every "
        "keep-alive response waits ~40 ms (`GET /delay/0` from a `requests.Session`: 44 ms median, 1.4 ms "
        "with it; `/delay/100`: 144 ms, 105 ms with it). `python -m greenq.demo.target` itself still has "
        "that stall. Measured before the scenarios "
        "with `python loadtests/target.py --bench` (500 keep-alive connections, `GET /delay/100` back to "
        "back):",
        "",
        *target_lines(results),
        "",
        "## Scenarios",
        "",
        *scenario_lines(results),
        "",
        "## Errors",
        "",
        *(failures or ["None."]),
        "",
        "Raw figures: [loadtests/results.json](loadtests/results.json).",
        "",
    ]
    doc.write_text("\n".join(lines))


# ---- charts --------------------------------------------------------------------------------------


def _label(row: dict[str, Any]) -> str:
    return f"{row['key']}\n{row['kind']}" if row["key"].startswith("mixed") else row["key"]


def chart_throughput(table_rows: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(table_rows) + 1.5))
    labels = [_label(r) for r in table_rows]
    ys = range(len(table_rows))
    ax.barh(ys, [r["rps"] for r in table_rows], color=[COLORS.get(r["kind"], "grey") for r in table_rows])
    ax.scatter(
        [r["ideal"] for r in table_rows], ys, marker="|", s=300, color="black", label="ideal", zorder=3
    )
    for y, row in zip(ys, table_rows, strict=True):
        ax.annotate(f" {row['rps']:,.1f}/s", (row["rps"], y), va="center", fontsize=8)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("completed tasks/s (log scale; blue HTTP, orange CPU)")
    ax.set_title("greenq under locust: completed tasks per second")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chart_latency(table_rows: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(table_rows) + 1.5))
    width = 0.25
    for offset, (field, label) in enumerate((("p50", "p50"), ("p95", "p95"), ("p99", "p99"))):
        values = [r[field] or 0 for r in table_rows]
        ax.barh([y + (offset - 1) * width for y in range(len(table_rows))], values, height=width, label=label)
    ax.set_yticks(range(len(table_rows)), [_label(r) for r in table_rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(100, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("ms from enqueue to result (log scale; dotted: the 100 ms the HTTP body waits)")
    ax.set_title("latency as the producer sees it")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chart_cpu(results: dict[str, Any], path: Path) -> Path:
    parts = ["worker", "locust", "target", "redis", "other", "idle"]
    colors = ["#2b7bb9", "#7fb800", "#a05195", "#d62728", "#7f7f7f", "#e0e0e0"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(results["scenarios"]) + 1.5))
    keys = [r["scenario"]["key"] for r in results["scenarios"]]
    left = [0.0] * len(keys)
    for part, color in zip(parts, colors, strict=True):
        values = []
        for result in results["scenarios"]:
            usage = result["usage"]
            if part == "other":
                values.append(usage["other_cpu_pct"])
            elif part == "idle":
                values.append(usage["idle_pct"])
            else:
                values.append(usage["cpu_pct"].get(part, 0.0))
        ax.barh(keys, values, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlim(0, 290)
    ax.set_xlabel("% of one core (the machine has 200 %)")
    ax.set_title("where the CPU went")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def chart_timeline(results: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, kind in enumerate(("http", "cpu")):
        ax = axes[index]
        for result in results["scenarios"]:
            series = result["history"].get(kind)
            if series:
                ax.plot([t for t, _ in series], [v for _, v in series], label=result["scenario"]["key"])
        ax.set_title(f"{kind} tasks completed/s (locust's rolling rate)")
        ax.set_xlabel("s since locust started")
        ax.set_yscale("symlog")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "loadtests" / "results.json"
    write(json.loads(source.read_text()), ROOT / "docs" / "loadtests.md", ROOT / "docs" / "img")
    print(f"wrote {ROOT / 'docs' / 'loadtests.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
