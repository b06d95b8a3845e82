"""The task page (state, arguments, result or traceback, timeline, workflow links) and the
dead-letter page (filter, page, requeue or delete one, many or all matching).

Data comes from ``queries.task`` and ``deadletters.page``; nothing here talks to Redis. Every
value is escaped (``markup``): a task argument such as ``<script>`` is shown as text.
Imports: dashboard.layout, dashboard.markup, dashboard.deadletters (types only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from greenq.dashboard.layout import Context, dl, page, short
from greenq.dashboard.markup import Html, count, hidden, html, join, link, post_form, pretty, table, when

if TYPE_CHECKING:
    from greenq.dashboard.deadletters import Filter, Page

KNOWN_FIELDS = {"id", "task", "state", "date_done", "retries", "worker", "result"}
KNOWN_FIELDS |= {"exc_type", "exc_message", "traceback"}
# Workflow fields a result record may carry (issue 18): shown as links to those tasks.
LINK_FIELDS = ("parent_id", "root_id", "group_id", "chord_id", "children", "callbacks")


def _task_link(ctx: Context, value: Any) -> Html:
    if isinstance(value, list):
        return join((_task_link(ctx, v) for v in value), ", ")
    if isinstance(value, dict) and "id" in value:
        return _task_link(ctx, value["id"])
    return link(ctx.to(f"/tasks/{value}"), value) if isinstance(value, str) and value else html("{}", value)


def _timeline(found: dict[str, Any]) -> list[list[Any]]:
    """Events and result records in time order: enqueued (when the message is known), received,
    started, retried, finished — each with its worker."""
    rows: list[tuple[float, list[Any]]] = []
    message = found["message"] or {}
    if message.get("created"):  # set by the producer (epoch seconds)
        rows.append((float(message["created"]), ["enqueued", "-", f"queue {message['queue']}"]))
    for event in found["events"]:
        detail = event.get("error") or event.get("reason") or ""
        if event.get("runtime_s") is not None:
            detail = f"runtime {event['runtime_s']:.3f}s {detail}".strip()
        if event.get("deliveries", 1) != 1:
            detail = f"delivery {event['deliveries']} {detail}".strip()
        rows.append((float(event.get("time", 0)), [event.get("event"), event.get("worker", "-"), detail]))
    if not found["events"]:  # no task events: the result records still tell the states
        for record in found["records"]:
            detail = record.get("exc_type") and f"{record.get('exc_type')}: {record.get('exc_message')}"
            rows.append(
                (
                    float(record.get("date_done", 0)),
                    [record.get("state"), record.get("worker", "-"), detail or ""],
                )
            )
    if message.get("where") == "dead":  # its "time" is in ms (dead.lua)
        rows.append(
            (
                int(message["time"]) / 1000 if str(message.get("time", "")).isdigit() else 0.0,
                ["dead-lettered", message.get("worker", "-"), message.get("reason", "")],
            )
        )
    rows.sort(key=lambda item: item[0])
    return [[when(at) + f".{int(at * 1000) % 1000:03d}" if at else "-", *cells] for at, cells in rows]


def _facts(ctx: Context, found: dict[str, Any], latest: dict[str, Any], message: dict[str, Any]) -> Html:
    state = latest.get("state") or ("RUNNING" if found["running"] else None)
    if not state:
        state = "DEAD-LETTERED" if message.get("where") == "dead" else "PENDING"
    running = found["running"][0] if found["running"] else {}
    done = latest.get("state") in ("SUCCESS", "FAILURE", "REVOKED")
    facts: list[tuple[str, Any]] = [
        ("state", html('<span class="state state-{}">{}</span>', state.lower(), state)),
        ("task", latest.get("task") or message.get("task") or "-"),
        ("queue", link(ctx.to(f"/queues/{message['queue']}"), message["queue"]) if message else "-"),
        ("worker", latest.get("worker") or running.get("worker") or "-"),
        ("retries", latest.get("retries", message.get("retries", "-"))),
        ("finished (UTC)", when(latest.get("date_done")) if done else "-"),
    ]
    if running:
        facts.append(("running since (UTC)", when(running.get("started"))))
    if found["revoked"]:
        facts.append(("revoked", "yes, terminate" if found["revoked"] == "terminate" else "yes"))
    facts += [(name, _task_link(ctx, latest[name])) for name in LINK_FIELDS if latest.get(name)]
    if message.get("where") == "dead":
        facts.append(("dead-letter reason", message.get("reason", "-")))
    return dl(facts)


def _message(ctx: Context, found: dict[str, Any], message: dict[str, Any]) -> list[Html]:
    """The dead letter's actions and the message's arguments, when the page has the message."""
    parts = []
    if message.get("where") == "dead" and not ctx.read_only:
        fields = {
            "queue": message["queue"],
            "ids": [message["entry"]],
            "back": ctx.to(f"/tasks/{found['id']}"),
        }
        parts.append(
            html(
                '<div class="actions">{} {}</div>',
                post_form(ctx.to("/dead/requeue"), ctx.csrf, fields, "Requeue this task", "primary"),
                post_form(ctx.to("/dead/delete"), ctx.csrf, fields, "Delete the dead letter"),
            )
        )
    if "args" in message:
        arguments = pretty({"args": message["args"], "kwargs": message["kwargs"]})
        parts.append(html('<h2>Arguments</h2><pre class="args">{}</pre>', arguments))
    elif message.get("undecodable"):
        parts.append(
            html(
                "<h2>Message (undecodable: {})</h2><pre>{}</pre>", message["undecodable"], message.get("raw")
            )
        )
    else:
        parts.append(NO_ARGUMENTS)
    return parts


NO_ARGUMENTS = Html(
    '<p class="muted">Arguments are not stored with results: open the task from a queue peek or '
    "the dead letters to see them.</p>"
)


def _outcome(ctx: Context, found: dict[str, Any], latest: dict[str, Any]) -> list[Html]:
    parts = []
    if latest.get("state") == "SUCCESS":
        parts.append(html('<h2>Result</h2><pre class="result">{}</pre>', pretty(latest.get("result"))))
    if latest.get("exc_type"):
        parts.append(
            html(
                '<h2>{}: {}</h2><pre class="traceback">{}</pre>',
                latest["exc_type"],
                latest.get("exc_message"),
                latest.get("traceback") or "no traceback",
            )
        )
    if found["group_members"]:
        parts.append(
            html(
                "<h2>Group members <small>{}</small></h2><p>{}</p>",
                len(found["group_members"]),
                _task_link(ctx, found["group_members"]),
            )
        )
    return parts


def task(ctx: Context, found: dict[str, Any]) -> Html:
    latest = found["latest"] or {}
    message = found["message"] or {}
    parts = [
        _facts(ctx, found, latest, message),
        *_message(ctx, found, message),
        *_outcome(ctx, found, latest),
    ]
    rows = _timeline(found)
    parts.append(Html("<h2>Timeline</h2>"))
    parts.append(
        table(["time (UTC)", "event", "worker", "detail"], rows, "timeline")
        if rows
        else Html("<p>nothing recorded</p>")
    )
    extra = {k: v for k, v in latest.items() if k not in KNOWN_FIELDS and k not in LINK_FIELDS}
    if extra:
        parts.append(html("<h2>Other fields of the result</h2><pre>{}</pre>", pretty(extra)))
    if found["records"]:
        parts.append(
            html(
                "<details><summary>Result records ({})</summary><pre>{}</pre></details>",
                len(found["records"]),
                pretty(found["records"]),
            )
        )
    return page(ctx, f"Task {found['id']}", join(parts))


def dead(ctx: Context, totals: dict[str, int], current: Page | None, flt: Filter) -> Html:
    tabs = join(
        html(
            '<a href="{}" class="{}">{} <small>{}</small></a>',
            ctx.to("/dead", queue=q),
            "current" if current and q == current.queue else "",
            q,
            count(n),
        )
        for q, n in sorted(totals.items())
    )
    parts = [html('<nav class="tabs">{}</nav>', tabs or "no queues")]
    if current is None:
        return page(ctx, "Dead letters", join(parts), current="/dead")
    q = current.queue
    parts.append(
        html(
            '<form method="get" class="filter" action="{}"><input type="hidden" name="queue" value="{}">'
            '<label>task <input name="task" value="{}" placeholder="name or glob"></label>'
            '<label>reason <input name="reason" value="{}" placeholder="contains"></label>'
            '<button type="submit">Filter</button> <a href="{}">clear</a></form>',
            ctx.to("/dead"),
            q,
            flt.task,
            flt.reason,
            ctx.to("/dead", queue=q),
        )
    )
    scope = {"queue": q, "task": flt.task, "reason": flt.reason}
    what = "matching the filter" if flt else "in the queue"
    if not ctx.read_only and current.total:
        parts.append(
            html(
                '<div class="actions">{} {}</div>',
                post_form(
                    ctx.to("/dead/requeue"),
                    ctx.csrf,
                    {**scope, "all": "1"},
                    f"Requeue all {what}…",
                    "primary",
                ),
                post_form(ctx.to("/dead/delete"), ctx.csrf, {**scope, "all": "1"}, f"Delete all {what}…"),
            )
        )
    parts.append(_dead_table(ctx, current, flt, scope))
    return page(ctx, f"Dead letters: {q}", join(parts), current="/dead")


def _dead_table(ctx: Context, current: Page, flt: Filter, scope: dict[str, str]) -> Html:
    q = current.queue
    shown = f"{len(current.letters)} shown of {current.total:,} dead letters"
    if flt:
        shown += f" (filtered; {current.scanned:,} looked at)"
    if current.cut:
        shown += "; stopped looking: go on with the next page"
    pager = join(
        [
            link(ctx.to("/dead", **scope), Html("&lt;&lt; oldest")),
            link(ctx.to("/dead", before=current.prev, **scope), Html("&lt; previous"))
            if current.prev
            else Html("<span>&lt; previous</span>"),
            link(ctx.to("/dead", after=current.next, **scope), Html("next &gt;"))
            if current.next
            else Html("<span>next &gt;</span>"),
            link(ctx.to("/dead", before="+", **scope), Html("newest &gt;&gt;")),
        ],
        " ",
    )
    rows = []
    for d in current.letters:
        task_id = d.get("id")
        target = (
            link(ctx.to(f"/tasks/{task_id}", kind="dead", queue=q, entry=d["entry"]), task_id)
            if task_id
            else d["entry"]
        )
        select = (
            Html("")
            if ctx.read_only
            else html('<input type="checkbox" name="ids" value="{}" aria-label="select">', d["entry"])
        )
        one = (
            Html("")
            if ctx.read_only
            else html(
                '<button name="one" value="{}" formaction="{}" class="primary small">requeue</button> '
                '<button name="one" value="{}" formaction="{}" class="danger small">delete</button>',
                d["entry"],
                ctx.to("/dead/requeue"),
                d["entry"],
                ctx.to("/dead/delete"),
            )
        )
        args = short({"args": d.get("args"), "kwargs": d.get("kwargs")} if "args" in d else d.get("raw"), 160)
        rows.append(
            [
                select,
                when(int(d["entry"].split("-")[0]) / 1000),
                target,
                d.get("task", "(undecodable)"),
                d.get("reason", "-"),
                args,
                d.get("worker", "-"),
                one,
            ]
        )
    grid = (
        table(["", "dead since (UTC)", "task id", "task", "reason", "arguments", "worker", ""], rows, "dead")
        if rows
        else Html("<p>no dead letters here</p>")
    )
    if ctx.read_only or not rows:
        return html('<p class="pager">{} · {}</p>{}', pager, shown, grid)
    buttons = html(
        '<div class="actions"><button formaction="{}" class="primary">Requeue selected</button> '
        '<button formaction="{}" class="danger">Delete selected</button></div>',
        ctx.to("/dead/requeue"),
        ctx.to("/dead/delete"),
    )
    back = ctx.to("/dead", **scope)
    return html(
        '<p class="pager">{} · {}</p><form method="post" action="{}" id="dead-form">{}{}{}</form>',
        pager,
        shown,
        ctx.to("/dead/requeue"),
        hidden({"csrf": ctx.csrf, "queue": q, "back": back}),
        grid,
        buttons,
    )
