"""The page around every view: header, navigation, the task-id search, notices, and the pages
every view shares (confirm a destructive action, an error). Imports: dashboard.markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from greenq.dashboard.markup import Html, escape, hidden, html, join, link, url


@dataclass
class Context:
    """What every page needs of the request: where it is mounted, the form token, the mode."""

    prefix: str  # the mount point (SCRIPT_NAME), "" at the root
    csrf: str
    read_only: bool
    broker: str  # the broker URL, password masked
    notice: str | None = None  # the outcome of the last action (a signed ``done`` parameter)

    def to(self, path: str, **query: Any) -> str:
        return url(self.prefix, path, **query)


NAV = (("/", "Overview"), ("/dead", "Dead letters"), ("/scheduled", "Scheduled"))


def page(ctx: Context, title: str, body: Html, current: str = "") -> Html:
    nav = join(
        html('<a href="{}" class="{}">{}</a>', ctx.to(path), "current" if path == current else "", label)
        for path, label in NAV
    )
    mode = Html('<span class="badge">read-only</span>') if ctx.read_only else Html("")
    notice = html('<p class="notice" role="status">{}</p>', ctx.notice) if ctx.notice else Html("")
    return html(
        """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} · greenq</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="{css}"><script src="{js}" defer></script></head>
<body data-prefix="{prefix}">
<header><a class="brand" href="{home}">greenq</a><nav>{nav}</nav>
<form class="search" method="get" action="{task}"><input name="id" placeholder="task id" aria-label="task id"
 required><button type="submit">Find task</button></form>
<span class="broker" title="broker">{broker}</span>{mode}</header>
<main>{notice}<h1>{title}</h1>{body}</main></body></html>""",
        title=title,
        css=ctx.to("/static/dashboard.css"),
        js=ctx.to("/static/dashboard.js"),
        prefix=ctx.prefix,
        home=ctx.to("/"),
        nav=nav,
        task=ctx.to("/tasks"),
        broker=ctx.broker,
        mode=mode,
        notice=notice,
        body=body,
    )


def confirm(ctx: Context, action: str, fields: dict[str, Any], question: str, detail: str, back: str) -> Html:
    """Ask before a destructive action: the same POST again, with ``confirmed=1`` and a token."""
    body = html(
        """<section class="confirm"><p class="question">{}</p><p>{}</p>
<form method="post" action="{}">{}<button class="danger" type="submit" id="confirm">Yes, do it</button>
<a class="button" href="{}">Cancel</a></form></section>""",
        question,
        detail,
        action,
        hidden({"csrf": ctx.csrf, **fields, "confirmed": "1"}),
        back,
    )
    return page(ctx, "Please confirm", body)


def error(ctx: Context, title: str, message: str) -> Html:
    return page(ctx, title, html('<p class="error">{}</p><p>{}</p>', message, link(ctx.to("/"), "Overview")))


def short(value: Any, limit: int = 120) -> str:
    """Arguments on one line, cut: the full text is on the task page."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dl(pairs: list[tuple[str, Any]]) -> Html:
    return html(
        '<dl class="facts">{}</dl>', join(html("<dt>{}</dt><dd>{}</dd>", k, escape(v)) for k, v in pairs)
    )
