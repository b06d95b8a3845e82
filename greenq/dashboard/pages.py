"""The overview, queue and scheduled pages: data from ``queries`` and ``live`` to HTML.

Each function takes the page ``Context`` and plain data and returns escaped markup; nothing
here talks to Redis. The overview's tables are rendered here and then kept current by the
page's script from the live feed, with the same columns in the same order (``QUEUE_COLUMNS``,
``WORKER_COLUMNS``). Imports: dashboard.layout, dashboard.markup, cli_render.
"""

from __future__ import annotations

import time
from typing import Any

from greenq.cli_render import age
from greenq.dashboard.layout import Context, dl, page, short
from greenq.dashboard.markup import Html, count, html, join, link, post_form, table, when

QUEUE_COLUMNS = (
    "queue",
    "waiting",
    "reserved",
    "running",
    "delayed",
    "dead",
    "oldest",
    "consumers",
    "done/s",
    "last 2 min",
)
WORKER_COLUMNS = (
    "worker",
    "host",
    "pool",
    "conc.",
    "in flight",
    "tasks/s",
    "processed",
    "failed",
    "RSS",
    "up since",
    "heartbeat",
)
BACKLOG_AGE_S = 10.0  # a queue whose oldest waiting message is older is marked as backing up


def throughput(history: list[dict[str, Any]], queue: str, seconds: int = 10) -> float | None:
    """Finished tasks per second over the last ``seconds`` ticks (None: no ticks yet)."""
    recent = history[-seconds:]
    if not recent:
        return None
    return sum(tick["q"].get(queue, [0])[0] for tick in recent) / len(recent)


def _backing_up(row: dict[str, Any]) -> bool:
    oldest = row.get("oldest_age_s")
    return bool((oldest is not None and oldest >= BACKLOG_AGE_S) or (row["waiting"] and not row["consumers"]))


def _queue_row(ctx: Context, row: dict[str, Any], rate: float | None) -> Html:
    name = row["name"]
    cells = [
        link(ctx.to(f"/queues/{name}"), name),
        count(row["waiting"]),
        count(row["reserved"]),
        count(row["running"]),
        count(row["delayed"]),
        link(ctx.to("/dead", queue=name), count(row["dead"])) if row["dead"] else "0",
        age(row["oldest_age_s"]),
        row["consumers"],
        "-" if rate is None else f"{rate:.1f}",
        html('<canvas class="spark" width="120" height="22" data-queue="{}"></canvas>', name),
        # FLOW CONTROL (issue 20): a "paused" badge and the limits join this row once they exist.
    ]
    return html(
        '<tr data-queue="{}" class="{}">{}</tr>',
        name,
        "backlog" if _backing_up(row) else "",
        join(html("<td>{}</td>", c) for c in cells),
    )


def worker_cells(w: dict[str, Any]) -> list[Any]:
    return [
        w["name"],
        w["host"],
        w["pool"],
        w["concurrency"],
        w["in_flight"],
        "-" if w["rate"] is None else f"{w['rate']:.1f}",
        count(w["processed"]),
        count(w["failed"]),
        "-" if w["rss_kib"] is None else f"{w['rss_kib'] / 1024:.0f} MiB",
        when(w["started_at"]),
        age(w["heartbeat_age_s"]),
    ]


def overview(ctx: Context, counts: dict[str, Any], history: list[dict[str, Any]], events_seen: bool) -> Html:
    queues = counts["queues"]
    note = Html("")
    if counts["events_off"] or not events_seen:
        who = (
            f"{len(counts['events_off'])} live worker(s) send no task events "
            f"({', '.join(counts['events_off'])})"
            if counts["events_off"]
            else "No task events on this broker yet"
        )
        note = html(
            '<p class="note" id="events-note">{}: the throughput chart needs them '
            "(worker_send_task_events, <code>greenq worker -E</code>). Counts come from Redis alone.</p>",
            who,
        )
    options = join(html('<option value="{}">{}</option>', q["name"], q["name"]) for q in queues)
    chart = html(
        """<section class="chart"><div class="chart-head"><h2>Throughput and latency</h2>
<label>queue <select id="chart-queue"><option value="">all queues</option>{}</select></label>
<span class="legend"><i class="done"></i>finished/s <i class="failed"></i>failed/s
<i class="lat"></i>latency p95 (ms)</span>
<span id="live-state" class="live">connecting…</span></div>
<canvas id="chart" width="1100" height="220" data-ticks="0" data-done="0"></canvas>{}</section>""",
        options,
        note,
    )
    queue_rows = join(_queue_row(ctx, q, throughput(history, q["name"])) for q in queues)
    queue_head = join(html("<th>{}</th>", c) for c in QUEUE_COLUMNS)
    queue_table = html(
        '<table class="queues"><thead><tr>{}</tr></thead><tbody id="queues">{}</tbody></table>',
        queue_head,
        queue_rows or html('<tr><td colspan="{}">no queues yet</td></tr>', len(QUEUE_COLUMNS)),
    )
    worker_rows = [worker_cells(w) for w in counts["workers"]]
    body = join(
        [
            chart,
            html("<h2>Queues <small>{}</small></h2>", len(queues)),
            queue_table,
            html("<h2>Workers <small>{}</small></h2>", len(worker_rows)),
            table(list(WORKER_COLUMNS), worker_rows, "workers", body_id="workers"),
        ]
    )
    return page(ctx, "Overview", body, current="/")


def queue(
    ctx: Context,
    row: dict[str, Any],
    messages: list[dict[str, Any]],
    delayed: list[dict[str, Any]],
    limit: int,
) -> Html:
    name = row["name"]
    facts = dl(
        [
            ("waiting", count(row["waiting"])),
            ("reserved (delivered, not acked)", count(row["reserved"])),
            ("running", count(row["running"])),
            ("delayed", count(row["delayed"])),
            ("dead", link(ctx.to("/dead", queue=name), count(row["dead"]))),
            ("oldest waiting", age(row["oldest_age_s"])),
            ("consumers", row["consumers"]),
        ]
    )
    # FLOW CONTROL (issue 20): pause/resume buttons and the rate/concurrency limits of this queue
    # go here (POST forms with the CSRF token, hidden when read-only) once greenq has them.
    actions = Html("")
    if not ctx.read_only:
        actions = html(
            '<div class="actions">{}</div>',
            post_form(ctx.to(f"/queues/{name}/purge"), ctx.csrf, {}, f"Purge {row['waiting']:,} waiting…"),
        )
    peek_rows = [
        [
            link(ctx.to(f"/tasks/{m['id']}", kind="stream", queue=name, entry=m["entry"]), m["id"])
            if m.get("id")
            else m["entry"],
            m.get("task", "(undecodable)"),
            short({"args": m.get("args"), "kwargs": m.get("kwargs")} if "args" in m else m.get("raw")),
            m.get("priority", "-"),
            m.get("retries", "-"),
            m.get("deliveries", "-"),
            when(int(m["entry"].split("-")[0]) / 1000),
        ]
        for m in messages
    ]
    peek_form = html(
        '<form method="get" class="inline"><label>show next <input name="n" type="number" min="1" max="1000" '
        'value="{}"></label><button type="submit">Peek</button></form>',
        limit,
    )
    body = join(
        [
            facts,
            actions,
            html("<h2>Next {} waiting</h2>", len(messages)),
            peek_form,
            table(
                ["task id", "task", "arguments", "priority", "retries", "deliveries", "enqueued (UTC)"],
                peek_rows,
                "peek",
            )
            if peek_rows
            else Html("<p>nothing waiting</p>"),
            html("<h2>Delayed <small>soonest {}</small></h2>", len(delayed)),
            _delayed_table(ctx, delayed) if delayed else Html("<p>none</p>"),
        ]
    )
    return page(ctx, f"Queue {name}", body)


def _delayed_table(ctx: Context, rows: list[dict[str, Any]]) -> Html:
    clock = time.time()
    return table(
        ["due (UTC)", "in", "queue", "task", "task id", "arguments", "retries"],
        [
            [
                when(r["due"]),
                age(max(0.0, r["due"] - clock)),
                link(ctx.to(f"/queues/{r['queue']}"), r["queue"]),
                r.get("task", "(undecodable)"),
                link(ctx.to(f"/tasks/{r['id']}"), r["id"]) if r.get("id") else "-",
                short({"args": r.get("args"), "kwargs": r.get("kwargs")}),
                r.get("retries", "-"),
            ]
            for r in rows
        ],
        "delayed",
    )


def scheduled(
    ctx: Context,
    delayed: list[dict[str, Any]],
    totals: dict[str, int],
    schedules: list[dict[str, Any]] | None,
) -> Html:
    total = sum(totals.values())
    per_queue = ", ".join(f"{q} {n:,}" for q, n in sorted(totals.items()) if n) or "none"
    if schedules is None:
        periodic = Html("<p>The app has no periodic schedules (beat_schedule or @app.periodic).</p>")
    else:
        periodic = table(
            ["name", "task", "schedule", "next (UTC)", "next (local)", "last (UTC)", "last task", "fired by"],
            [
                [
                    s["name"],
                    s["task"],
                    s["schedule"],
                    s["next_utc"][:19].replace("T", " "),
                    s["next_local"][:19].replace("T", " "),
                    (s["last_utc"] or "-")[:19].replace("T", " "),
                    link(ctx.to(f"/tasks/{s['last_task_id']}"), s["last_task_id"])
                    if s["last_task_id"]
                    else "-",
                    s["fired_by"] or "-",
                ]
                for s in schedules
            ],
            "schedules",
        )
    body = join(
        [
            html(
                "<h2>Delayed messages <small>{} in all ({}); soonest {} shown</small></h2>",
                f"{total:,}",
                per_queue,
                len(delayed),
            ),
            _delayed_table(ctx, delayed) if delayed else Html("<p>none</p>"),
            Html("<h2>Periodic schedules</h2>"),
            periodic,
        ]
    )
    return page(ctx, "Scheduled", body, current="/scheduled")
