"""The operator commands of ``greenq``: status, inspect, ping, purge, peek, events, exporter,
dead, queue forget|pause|resume|limit.

Each reads Redis through ``greenq.admin`` and prints a table (``greenq.cli_render``) or
``--json``. None of them starts an embedded server (``greenq.loader.app_for_command``). Errors
are one line and a non-zero exit (raised as GreenqError and printed by ``greenq.cli.main``).
Top-level imports: stdlib only, like cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any


def _broker(args: argparse.Namespace) -> Any:
    """The app and broker of an operator command; never starts an embedded server."""
    from greenq.loader import app_for_command

    app = app_for_command(args, may_start=False)
    return app, app.broker


def cmd_status(args: argparse.Namespace) -> int:
    from greenq import shards
    from greenq.cli_render import broker_text, render_status
    from greenq.config import mask_url

    app, broker = _broker(args)
    if args.json:
        status = _status(app, broker, args.shards)
        data = {"broker": mask_url(app.conf.broker_url), **status, "schedules": _schedules(app)}
        print(json.dumps(data, indent=2, default=str))
        return 0
    rounds = 0
    while True:
        data = {"broker": broker_text(app), **_status(app, broker, args.shards), "schedules": _schedules(app)}
        data["queues"] = shards.flatten(data["queues"])  # NAME (N shards), then its shards with --shards
        screen = render_status(data)
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  greenq status --watch\n\n"))
        print(screen, flush=True)
        rounds += 1
        if not args.watch or (args.count and rounds >= args.count):
            return 0
        time.sleep(args.interval)


def _status(app: Any, broker: Any, detail: bool = False) -> dict[str, Any]:
    """``admin.status`` with each queue's rate limit from the app's settings where no runtime
    limit (``greenq queue limit``) is set, and a sharded queue's shards summed into one row
    (kept in ``per_shard`` with ``detail``)."""
    from greenq import admin, shards

    data = admin.status(broker)
    data["queues"] = shards.merge(data["queues"], detail)
    configured = app.conf.queue_rate_limits or {}
    for queue in data["queues"]:
        if queue.get("rate_limit") is None and queue["name"] in configured:
            queue["rate_limit"] = f"{configured[queue['name']]} (setting)"
    return data


def _schedules(app: Any) -> list[dict[str, Any]]:
    """The app's periodic schedules as ``greenq schedule list`` shows them (none without -A)."""
    schedules = app.schedules()
    if not schedules:
        return []
    from greenq.schedule_cli import schedule_rows

    return schedule_rows(app, schedules)


def _select_workers(broker: Any, destination: str | None) -> list[dict[str, Any]]:
    from greenq import admin
    from greenq.exceptions import ConfigError

    found = admin.workers(broker)
    if destination:
        found = [w for w in found if destination in (w.get("name"), w.get("consumer"))]
        if not found:
            raise ConfigError(f"no live worker named {destination!r}")
    return found


def cmd_inspect(args: argparse.Namespace) -> int:
    from greenq.cli_render import render_active, render_reserved

    app, broker = _broker(args)
    selected = _select_workers(broker, args.destination)
    out: dict[str, Any] = {}
    asked: dict[str, dict[str, str]] = {}
    if args.what == "active" and args.args is not None:
        from greenq import admin

        wanted = {
            w["consumer"]: [a["id"] for a in w.get("active", []) if not args.args or a["id"] in args.args]
            for w in selected
        }
        asked = admin.active_arguments(broker, wanted)
    for worker in selected:
        if args.what == "active":
            # Runtimes are as of now; the list itself is as old as the heartbeat it came from.
            clock = time.time()
            out[worker["consumer"]] = {
                "heartbeat_age_s": round(worker["heartbeat_age_s"], 3),
                "active": [
                    _active_entry(a, clock, asked.get(worker["consumer"], {}))
                    for a in worker.get("active", [])
                ],
            }
        elif args.what == "reserved":
            out[worker["consumer"]] = {"reserved": worker.get("reserved", 0), "held": worker.get("held", 0)}
        elif args.what == "registered":
            out[worker["consumer"]] = worker.get("tasks", sorted(app.tasks))
        else:
            out[worker["consumer"]] = {k: v for k, v in worker.items() if k != "active"}
    if args.json or args.what in ("registered", "stats"):
        print(json.dumps(out, indent=2, default=str))
    else:
        print(render_active(out) if args.what == "active" else render_reserved(out))
    return 0


def _active_entry(entry: dict[str, Any], clock: float, asked: dict[str, str]) -> dict[str, Any]:
    """One running task as shown: runtime added, and its arguments when they were asked for
    (``--args``; JSON text cut by the worker)."""
    shown = dict(entry)
    if "started" in entry:
        shown["runtime_s"] = round(clock - entry["started"], 3)
    if entry.get("id") in asked:
        shown["arguments"] = asked[entry["id"]]
    return shown


def cmd_ping(args: argparse.Namespace) -> int:
    from greenq import admin

    _, broker = _broker(args)
    found = admin.workers(broker)
    for worker in found:
        print(f"{worker['consumer']}: pong (heartbeat {worker['heartbeat_age_s']:.1f}s ago)")
    if not found:
        print("no live workers")
    return 0 if found else 1


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        end = f"/{total:,}" if total else ""
        sys.stderr.write(f"\r{label} {done:,}{end}")
        sys.stderr.flush()

    return show


def cmd_purge(args: argparse.Namespace) -> int:
    from greenq import admin, shards

    app, broker = _broker(args)
    known = admin.known_queues(broker)
    expanded = shards.expand([args.queue], app.conf.queue_shards or {})  # a queue and its shards
    names = [q for q in expanded if q in known] or [args.queue]  # none known: purge says so
    ready = sum(admin.queue_stats(broker, q).ready for q in names if q in known)
    if not args.yes:
        if not sys.stdin.isatty():
            print("greenq: error: refusing to purge without --yes (no terminal to confirm)", file=sys.stderr)
            return 1
        answer = input(f"Delete {ready:,} ready messages from queue {args.queue!r}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("aborted")
            return 1
    removed = sum(admin.purge(broker, q, _progress("purged")) for q in names)  # a queue and its shards
    sys.stderr.write("\n" if removed else "")
    print(f"purged {removed:,} messages from {args.queue}")
    return 0


def cmd_peek(args: argparse.Namespace) -> int:
    from greenq import admin

    _, broker = _broker(args)
    print(json.dumps(admin.peek(broker, args.queue, args.count), indent=2, default=str))
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    from greenq import admin

    app, broker = _broker(args)
    if args.action == "list":
        print(
            json.dumps(
                admin.dead_list(broker, args.target[0] if args.target else None), indent=2, default=str
            )
        )
    elif args.action == "show":
        entries = [e for e in admin.dead_list(broker, None, 100_000) if e["entry"] in args.target]
        print(json.dumps(entries, indent=2, default=str))
        return 0 if entries else 1
    elif args.action == "requeue":
        queue, ids = _queue_or_ids(broker, args.target)
        conf = app.conf
        keys = [k for k in [conf.message_signing_key, *(conf.message_signing_old_keys or [])] if k]
        moved, refused = admin.dead_requeue(broker, queue, ids, keys, _progress("requeued"))
        for line in refused:
            print(f"refused {line}", file=sys.stderr)
        print(f"requeued {moved:,} dead letters")
        return 1 if refused and not moved else 0
    else:
        print(f"purged {admin.dead_purge(broker, args.target[0] if args.target else None):,} dead letters")
    return 0


def _events_note(broker: Any) -> str | None:
    """Why ``greenq events`` may wait for ever: nothing has ever sent an event here."""
    from greenq import admin

    off = [w.get("name") for w in admin.workers(broker) if w.get("send_task_events") is False]
    with broker.guard():
        empty = not broker.client.exists(broker.keys.EVENTS)
    if not off and not empty:
        return None
    who = (
        f"{len(off)} live worker(s) send no task events ({', '.join(map(str, off))})"
        if off
        else "no task events on this broker yet"
    )
    return (
        f"greenq events: {who}: workers send them only with worker_send_task_events on "
        "(greenq worker -E, or GREENQ_WORKER_SEND_TASK_EVENTS=1); waiting for events"
    )


def cmd_events(args: argparse.Namespace) -> int:
    """Tail the task events stream live (workers need worker_send_task_events)."""
    _, broker = _broker(args)
    note = _events_note(broker)
    if note:
        print(note, file=sys.stderr, flush=True)
    shown, last = 0, "0-0" if args.from_start else "$"
    with broker.guard():
        while args.count is None or shown < args.count:
            reply = broker.client.xread({broker.keys.EVENTS: last}, count=100, block=1000)
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                event = json.loads(fields[b"e"])
                if args.task and event.get("task") != args.task:
                    continue
                print(
                    json.dumps(event)
                    if args.json
                    else f"{time.strftime('%H:%M:%S', time.localtime(event['time']))} {event['event']:<9} "
                    f"{_subject(event)} {event.get('error') or ''}".rstrip(),
                    flush=True,
                )
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    return 0


def _subject(event: dict[str, Any]) -> str:
    """What an event is about: ``task[id]``, or the queue of a pause, resume or limit."""
    if "task" in event:
        return f"{event['task']}[{event.get('id')}]"
    return f"queue {event.get('queue')}" + (f" {event['rate']}" if event.get("rate") else "")


def cmd_exporter(args: argparse.Namespace) -> int:
    from greenq.metrics import QueueCollector, serve

    _, broker = _broker(args)
    broker.ping()
    serve(QueueCollector(broker), args.port, args.address)
    print(f"serving queue metrics on http://{args.address}:{args.port}/metrics", flush=True)
    while True:
        time.sleep(3600)


def cmd_queue(args: argparse.Namespace) -> int:
    from greenq import admin
    from greenq.exceptions import ConfigError

    app, broker = _broker(args)
    if args.action == "limit" and args.name in (app.conf.queue_shards or {}):
        raise ConfigError(f"queue {args.name!r} is sharded: it has no queue rate limit (docs/scaling.md)")
    if args.action == "forget":
        admin.forget_queue(broker, args.name)
        print(f"forgot queue {args.name}")
        return 0
    if (args.rate is None) != (args.action != "limit"):
        raise ConfigError("give a rate with limit only: greenq queue limit NAME 20/s (0: none; default)")
    print(admin.control_queue(broker, args.name, args.action, args.rate))
    return 0


def _queue_or_ids(broker: Any, target: list[str]) -> tuple[str | None, list[str]]:
    from greenq import admin

    if len(target) == 1 and target[0] in admin.known_queues(broker):
        return target[0], []
    return None, target


def add_commands(subs: Any, add_app_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    status = subs.add_parser("status", help="queues and workers at a glance")
    add_app_flags(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--shards", action="store_true", help="a row per shard of sharded queues")
    status.add_argument("--watch", action="store_true", help="refresh in place like top")
    status.add_argument("--interval", type=float, default=2.0)
    status.add_argument("--count", type=int, help="with --watch: stop after this many screens")
    status.set_defaults(handler=cmd_status)

    inspect = subs.add_parser("inspect", help="what workers run, hold and know (from heartbeats)")
    add_app_flags(inspect)
    inspect.add_argument("what", choices=["active", "reserved", "registered", "stats"])
    inspect.add_argument("-d", "--destination", help="worker name or consumer id")
    inspect.add_argument("--json", action="store_true", help="data instead of a table")
    inspect.add_argument(
        "--args",
        nargs="*",
        metavar="ID",
        help="active: ask the workers for the arguments of these running tasks (all, if no id is given)",
    )
    inspect.set_defaults(handler=cmd_inspect)

    ping = subs.add_parser("ping", help="list live workers and their heartbeat age")
    add_app_flags(ping)
    ping.set_defaults(handler=cmd_ping)

    purge = subs.add_parser("purge", help="delete a queue's ready messages")
    add_app_flags(purge)
    purge.add_argument("queue")
    purge.add_argument("-y", "--yes", action="store_true")
    purge.set_defaults(handler=cmd_purge)

    peek = subs.add_parser("peek", help="show the next messages of a queue without consuming them")
    add_app_flags(peek)
    peek.add_argument("queue")
    peek.add_argument("-n", "--count", type=int, default=10)
    peek.set_defaults(handler=cmd_peek)

    events = subs.add_parser("events", help="tail task events live (worker_send_task_events)")
    add_app_flags(events)
    events.add_argument("--task", help="only this task name")
    events.add_argument("--count", type=int, help="stop after this many events")
    events.add_argument("--json", action="store_true")
    events.add_argument("--from-start", action="store_true", help="replay the kept history first")
    events.set_defaults(handler=cmd_events)

    exporter = subs.add_parser("exporter", help="serve queue-level Prometheus metrics from Redis")
    add_app_flags(exporter)
    exporter.add_argument("--port", type=int, default=9808)
    exporter.add_argument("--address", default="127.0.0.1")
    exporter.set_defaults(handler=cmd_exporter)

    dead = subs.add_parser(
        "dead", help="dead letters: list [QUEUE] | show ID... | requeue QUEUE|ID... | purge [QUEUE]"
    )
    add_app_flags(dead)
    dead.add_argument("action", choices=["list", "show", "requeue", "purge"])
    dead.add_argument("target", nargs="*")
    dead.set_defaults(handler=cmd_dead)

    queue = subs.add_parser(
        "queue",
        help="forget NAME (drop an empty, unread queue from status) | pause NAME | resume NAME | "
        "limit NAME RATE (over all workers: 20/s, 10/m, 0 for none, default for the setting)",
    )
    add_app_flags(queue)
    queue.add_argument("action", choices=["forget", "pause", "resume", "limit"])
    queue.add_argument("name")
    queue.add_argument("rate", nargs="?")
    queue.set_defaults(handler=cmd_queue)
