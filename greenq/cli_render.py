"""Text tables for the operator commands: the status screen and ``inspect``.

Pure functions from the plain data ``greenq.admin`` returns (and an app's settings) to text;
no Redis. Imports: config (lazily, to mask URLs).
"""

from __future__ import annotations

import time
from typing import Any

# Fields of an ``active`` entry shown as their own columns; any other field a worker publishes
# (e.g. args, when asked for with --args) is shown after them.
ACTIVE_COLUMNS = ("id", "task", "runtime_s")


def broker_text(app: Any) -> str:
    """``unix:///…/.greenq/redis.sock?db=0 (embedded redis-server in …)``: the URL an app
    uses, password masked, and where it came from."""
    from greenq.config import mask_url

    return f"{mask_url(app.conf.broker_url)} ({app.conf_origin.get('broker_url', 'default')})"


def age(seconds: float | None) -> str:
    """``4.2s``, ``12m``, ``3.1h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render_status(data: dict[str, Any]) -> str:
    """The ``greenq status`` screen: the broker line, then QUEUES and WORKERS."""
    queues = [
        [
            q["name"],
            f"{q['ready']:,}",
            f"{q['in_flight']:,}",
            f"{q['delayed']:,}",
            f"{q['dead']:,}",
            age(q["oldest_age_s"]),
            q["consumers"],
            _flow(q),
        ]
        for q in data["queues"]
    ]
    workers = [
        [
            w.get("name"),
            w.get("group", "-"),
            w.get("host"),
            w.get("pid"),
            w.get("pool"),
            w.get("concurrency"),
            w.get("running", 0) + w.get("cpu_busy", 0),
            f"{w.get('processed', 0):,}",
            f"{w.get('failed', 0):,}",
            age(time.time() - w.get("started_at", time.time())),
            age(w.get("heartbeat_age_s")),
        ]
        for w in data["workers"]
    ]
    worker_headers = ["name", "group", "host", "pid", "pool", "conc", "busy", "processed", "failed"]
    worker_headers += ["uptime", "heartbeat"]
    return "\n".join(
        [
            *([f"BROKER {data['broker']}", ""] if data.get("broker") else []),
            "QUEUES",
            table(["queue", "ready", "in-flight", "delayed", "dead", "oldest", "consumers", "flow"], queues),
            "",
            "WORKERS",
            table(worker_headers, workers),
            *_next_schedule(data.get("schedules")),
        ]
    )


def _flow(queue: dict[str, Any]) -> str:
    """``paused``, the rate limit in force, both, or ``-`` (docs/flow-control.md)."""
    parts = ["paused"] if queue.get("paused") else []
    if queue.get("rate_limit") not in (None, "0"):
        parts.append(str(queue["rate_limit"]))
    return " ".join(parts) or "-"


def _next_schedule(rows: list[dict[str, Any]] | None) -> list[str]:
    """The SCHEDULES line: how many the app has and which fires next (``status -A app``)."""
    if not rows:
        return []
    soonest = min(rows, key=lambda row: row["next_utc"])
    return [
        "",
        f"SCHEDULES {len(rows)}; next: {soonest['name']} ({soonest['task']}, {soonest['schedule']}) "
        f"at {soonest['next_local'][:19]} local, {soonest['next_utc'][:19]} UTC",
    ]


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def render_active(data: dict[str, dict[str, Any]]) -> str:
    """``inspect active`` as text: per worker, the heartbeat's age, then one row per task."""
    blocks = []
    for consumer, entry in data.items():
        tasks = entry["active"]
        heading = f"{consumer}  (heartbeat {age(entry['heartbeat_age_s'])} ago, {len(tasks)} running)"
        if not tasks:
            blocks.append(heading)
            continue
        extra = sorted({k for task in tasks for k in task} - {*ACTIVE_COLUMNS, "started"})
        headers = [*ACTIVE_COLUMNS, *extra]
        rows = [
            [age(t.get("runtime_s")) if h == "runtime_s" else _cell(t.get(h, "-")) for h in headers]
            for t in tasks
        ]
        blocks.append(f"{heading}\n{table(['runtime' if h == 'runtime_s' else h for h in headers], rows)}")
    return "\n\n".join(blocks) if blocks else "no live workers"


def render_reserved(data: dict[str, dict[str, Any]]) -> str:
    """``inspect reserved`` as text: one row per worker."""
    rows = [[consumer, v["reserved"], v["held"]] for consumer, v in data.items()]
    return table(["worker", "reserved", "held"], rows) if rows else "no live workers"
