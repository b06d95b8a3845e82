"""The POST handlers: purge a queue, requeue or delete dead letters.

Reached only past ``Dashboard._refuse`` (not read-only, CSRF token valid). An action on more
than the rows a person ticked — a purge, "all matching" — first answers with a confirmation page
that repeats the request with ``confirmed=1``. Each ends in a redirect (303) to the page it came
from, with a signed notice of what it did. Imports: admin, dashboard.*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from greenq import admin
from greenq.broker.keys import check_queue_name
from greenq.dashboard import deadletters
from greenq.dashboard.layout import confirm
from greenq.dashboard.web import Request, Response, html_response, redirect
from greenq.exceptions import ConfigError

if TYPE_CHECKING:
    from greenq.dashboard.layout import Context
    from greenq.dashboard.security import Guard


class Actions:
    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.broker = app.broker
        self.guard = guard

    def _done(self, ctx: Context, back: str, notice: str) -> Response:
        """Back where the action came from (a path under this dashboard only), saying what it did."""
        if not back.startswith(ctx.prefix + "/") or back.startswith("//") or "\\" in back:
            back = ctx.to("/")
        return redirect(back + ("&" if "?" in back else "?") + "done=" + self.guard.sign(notice))

    def _queue(self, name: str) -> str:
        check_queue_name(name)
        if name not in admin.known_queues(self.broker):
            raise ConfigError(f"unknown queue {name!r}")
        return name

    def purge(self, request: Request, ctx: Context, name: str) -> Response:
        self._queue(name)
        if request.arg("confirmed") != "1":
            waiting = admin.queue_stats(self.broker, name).ready
            return html_response(
                confirm(
                    ctx,
                    ctx.to(f"/queues/{name}/purge"),
                    {},
                    f"Delete the {waiting:,} waiting messages of queue {name}?",
                    "Messages already delivered to workers, delayed and dead letters are kept. "
                    "This cannot be undone.",
                    ctx.to(f"/queues/{name}"),
                )
            )
        removed = admin.purge(self.broker, name)
        return self._done(ctx, ctx.to(f"/queues/{name}"), f"purged {removed:,} waiting messages from {name}")

    def dead(self, request: Request, ctx: Context, what: str) -> Response:
        queue = self._queue(request.arg("queue"))
        back = request.arg("back") or ctx.to("/dead", queue=queue)
        everything = request.arg("all") == "1"
        flt = deadletters.Filter(request.arg("task"), request.arg("reason")) if everything else None
        ids = [request.arg("one")] if request.arg("one") else request.args("ids")
        if not everything and not ids:
            return self._done(ctx, back, "nothing selected")
        if everything and request.arg("confirmed") != "1":
            return html_response(self._confirm_all(ctx, request, queue, what, flt))
        if what == "delete":
            removed = deadletters.delete(self.broker, queue, ids, flt)
            return self._done(ctx, back, f"deleted {removed:,} dead letters from {queue}")
        conf = self.app.conf
        keys = [k for k in [conf.message_signing_key, *(conf.message_signing_old_keys or [])] if k]
        moved, refused = deadletters.requeue(self.broker, queue, ids, flt, keys)
        notice = f"requeued {moved:,} dead letters to {queue}"
        if refused:
            notice += f"; refused {len(refused):,}: {refused[0]}"
        return self._done(ctx, back, notice)

    def _confirm_all(
        self, ctx: Context, request: Request, queue: str, what: str, flt: deadletters.Filter | None
    ) -> str:
        total = deadletters.counts(self.broker, [queue])[queue]
        which = (
            f"every dead letter of {queue} matching task {flt.task or 'any'!r} and reason "
            f"{flt.reason or 'any'!r} (of {total:,})"
            if flt
            else f"all {total:,} dead letters of {queue}"
        )
        verb = "Requeue" if what == "requeue" else "Delete"
        detail = (
            "Each goes back to its queue with its delivery count reset; with signing keys set, a "
            "letter whose signature does not verify stays dead."
            if what == "requeue"
            else "This cannot be undone."
        )
        fields = {
            "queue": queue,
            "all": "1",
            "task": flt.task if flt else "",
            "reason": flt.reason if flt else "",
            "back": request.arg("back"),
        }
        return confirm(
            ctx, ctx.to(f"/dead/{what}"), fields, f"{verb} {which}?", detail, ctx.to("/dead", queue=queue)
        )
