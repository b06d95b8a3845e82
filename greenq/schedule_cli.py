"""``greenq beat`` and ``greenq schedule list|run``: periodic schedules from the command line.

Every worker fires the app's schedules already (``--no-schedule`` turns that off); ``beat`` runs
the scheduler alone, for deployments that want it apart. ``schedule list`` shows each schedule
with its next fire (local time and UTC) and its last fire as recorded in Redis; ``schedule run``
enqueues one run now, outside the fire times. Top-level imports: stdlib only, like cli.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

UTC = datetime.timezone.utc


def _app(args: argparse.Namespace, may_start: bool) -> Any:
    from greenq.exceptions import ConfigError
    from greenq.loader import app_for_command

    app = app_for_command(args, may_start=may_start)
    schedules = app.schedules()
    if not schedules:
        raise ConfigError(f"app {app.name!r} has no periodic schedules (beat_schedule or @app.periodic)")
    return app, schedules


def cmd_beat(args: argparse.Namespace) -> int:
    """Run the scheduler alone until SIGTERM/SIGINT."""
    from greenq.worker.scheduler import Scheduler

    app, schedules = _app(args, may_start=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    scheduler = Scheduler(app, schedules, f"beat@{socket.gethostname()}")
    scheduler.run(app.broker.link(), stop)
    return 0


def schedule_rows(app: Any, schedules: list[Any]) -> list[dict[str, Any]]:
    """One record per schedule: what ``schedule list`` shows (``--json`` prints these)."""
    from greenq.worker.scheduler import Scheduler

    keys = Scheduler(app, schedules, "list").keys
    with app.broker.guard():
        pipe = app.broker.client.pipeline(transaction=False)
        pipe.time()
        for key in keys:
            pipe.hgetall(key)
        clock_s, *states = pipe.execute()
    clock = datetime.datetime.fromtimestamp(clock_s[0] + clock_s[1] / 1e6, UTC)
    rows = []
    for schedule, key, state in zip(schedules, keys, states, strict=True):
        state = {k.decode(): v.decode() for k, v in state.items()}
        upcoming = schedule.next_fire(clock)
        last = int(state["last"]) / 1000 if "last" in state else None
        rows.append(
            {
                "name": schedule.name,
                "task": schedule.task,
                "schedule": schedule.describe(),
                "next_utc": upcoming.isoformat(),
                "next_local": upcoming.astimezone().isoformat(),
                "last_utc": datetime.datetime.fromtimestamp(last, UTC).isoformat() if last else None,
                "last_task_id": state.get("task_id"),
                "fired_by": state.get("worker"),
                "state_key": key,
            }
        )
    return rows


def cmd_schedule(args: argparse.Namespace) -> int:
    from greenq.cli_render import table

    if args.action == "run":
        app, schedules = _app(args, may_start=True)
        found = {s.name: s for s in schedules}
        if args.name not in found:
            from greenq.exceptions import ConfigError

            raise ConfigError(f"unknown schedule {args.name!r}; the app has: {', '.join(sorted(found))}")
        schedule = found[args.name]
        options = {
            k: v for k, v in schedule.options.items() if k in ("queue", "priority", "countdown", "expires")
        }
        result = app.send_task(
            schedule.task, args=list(schedule.args), kwargs=dict(schedule.kwargs), **options
        )
        print(json.dumps({"schedule": schedule.name, "task_id": result.id}) if args.json else result.id)
        return 0
    app, schedules = _app(args, may_start=False)
    rows = schedule_rows(app, schedules)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["name", "task", "schedule", "next (local)", "next (UTC)", "last (UTC)", "last task id", "by"]
    body = [
        [
            r["name"],
            r["task"],
            r["schedule"],
            r["next_local"][:19],
            r["next_utc"][:19],
            (r["last_utc"] or "-")[:19],
            r["last_task_id"] or "-",
            r["fired_by"] or "-",
        ]
        for r in rows
    ]
    print(table(headers, body))
    return 0


def add_commands(subs: Any, add_app_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    beat = subs.add_parser("beat", help="run the periodic scheduler alone (workers run it too)")
    add_app_flags(beat)
    beat.set_defaults(handler=cmd_beat)
    schedule = subs.add_parser("schedule", help="list periodic schedules, or run one now")
    add_app_flags(schedule)
    schedule.add_argument("action", choices=["list", "run"])
    schedule.add_argument("name", nargs="?", help="run: the schedule to fire now")
    schedule.add_argument("--json", action="store_true", help="data instead of a table")
    schedule.set_defaults(handler=cmd_schedule)
