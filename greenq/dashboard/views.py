"""The GET handlers: read Redis through ``queries``/``deadletters``, render through ``pages``/
``task_pages``. None of them changes anything in Redis beyond what ``greenq status`` does
(dropping expired worker names from the registry). Imports: admin, broker.keys, dashboard.*.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from greenq import admin
from greenq.broker.keys import check_queue_name
from greenq.dashboard import deadletters, live, pages, queries, task_pages
from greenq.dashboard.web import Request, Response, html_response, json_response, redirect
from greenq.exceptions import ConfigError

if TYPE_CHECKING:
    from greenq.dashboard.layout import Context

ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}\Z")
PEEK_DEFAULT, PEEK_MAX = 20, 1000


class Views:
    def __init__(self, app: Any, feed: live.Feed) -> None:
        self.app = app
        self.broker = app.broker
        self.feed = feed

    def _counts(self) -> dict[str, Any]:
        return live.counts(self.broker, self.feed.route, self.feed.rates)

    def overview(self, request: Request, ctx: Context) -> Response:
        counts = self._counts()
        with self.broker.guard():
            events_seen = bool(self.broker.client.exists(self.broker.keys.EVENTS))
        return html_response(pages.overview(ctx, counts, self.feed.recent(), events_seen))

    def overview_json(self, request: Request, ctx: Context) -> Response:
        return json_response({**self._counts(), "history": self.feed.recent()})

    def _known(self, name: str) -> str:
        check_queue_name(name)
        if name not in admin.known_queues(self.broker):
            raise ConfigError(f"unknown queue {name!r}")
        return name

    def queue(self, request: Request, ctx: Context, name: str) -> Response:
        self._known(name)
        row = asdict(queries.overview(self.broker, self.feed.route, only=name).queues[0])
        try:
            limit = min(PEEK_MAX, max(1, int(request.arg("n") or PEEK_DEFAULT)))
        except ValueError:
            limit = PEEK_DEFAULT
        messages = admin.peek(self.broker, name, limit)
        delayed = queries.delayed(self.broker, [name], 20)
        return html_response(pages.queue(ctx, row, messages, delayed, limit))

    def find_task(self, request: Request, ctx: Context) -> Response:
        task_id = request.arg("id")
        return redirect(ctx.to(f"/tasks/{task_id}") if task_id else ctx.to("/"))

    def task(self, request: Request, ctx: Context, task_id: str) -> Response:
        hint = None
        kind, queue, entry = request.arg("kind"), request.arg("queue"), request.arg("entry")
        if kind in ("dead", "stream") and queue and ENTRY_ID.match(entry):
            hint = (kind, check_queue_name(queue), entry)
        found = queries.task(self.broker, task_id, hint)
        return html_response(task_pages.task(ctx, found))

    def dead(self, request: Request, ctx: Context) -> Response:
        totals = deadletters.counts(self.broker, admin.known_queues(self.broker))
        queue = request.arg("queue") or next((q for q, n in sorted(totals.items()) if n), "")
        if queue and queue not in totals:
            raise ConfigError(f"unknown queue {queue!r}")
        flt = deadletters.Filter(request.arg("task"), request.arg("reason"))
        current = None
        if queue:
            before = request.arg("before") if "before" in request.query else None
            after = request.arg("after") or None
            if before == "+":  # the newest page
                before = ""
            for cursor in (before, after):
                if cursor and not ENTRY_ID.match(cursor):
                    raise ConfigError(f"not an entry id: {cursor!r}")
            current = deadletters.page(self.broker, queue, flt, after=after, before=before)
        return html_response(task_pages.dead(ctx, totals, current, flt))

    def scheduled(self, request: Request, ctx: Context) -> Response:
        queues = admin.known_queues(self.broker)
        delayed = queries.delayed(self.broker, queues)
        totals = queries.delayed_counts(self.broker, queues)
        schedules = self.app.schedules()
        rows = None
        if schedules:
            from greenq.schedule_cli import schedule_rows

            rows = schedule_rows(self.app, schedules)
        return html_response(pages.scheduled(ctx, delayed, totals, rows))
