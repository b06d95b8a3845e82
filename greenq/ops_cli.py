"""The operator commands of ``greenq``: status, inspect, ping, purge, peek, dead.

Each reads Redis through ``greenq.admin`` and prints a table (or ``--json``). Errors are one
line and a non-zero exit (raised as GreenqError and printed by ``greenq.cli.main``).
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
    from greenq.cli import _apply_common, load_app

    app = load_app(args.app)
    _apply_common(app, args)
    return app, app.broker


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render_status(data: dict[str, Any]) -> str:
    queues = [
        [
            q["name"],
            f"{q['ready']:,}",
            f"{q['in_flight']:,}",
            f"{q['delayed']:,}",
            f"{q['dead']:,}",
            _age(q["oldest_age_s"]),
            q["consumers"],
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
            _age(time.time() - w.get("started_at", time.time())),
            _age(w.get("heartbeat_age_s")),
        ]
        for w in data["workers"]
    ]
    return "\n".join(
        [
            "QUEUES",
            _table(["queue", "ready", "in-flight", "delayed", "dead", "oldest", "consumers"], queues),
            "",
            "WORKERS",
            _table(
                [
                    "name",
                    "group",
                    "host",
                    "pid",
                    "pool",
                    "conc",
                    "busy",
                    "processed",
                    "failed",
                    "uptime",
                    "heartbeat",
                ],
                workers,
            ),
        ]
    )


def cmd_status(args: argparse.Namespace) -> int:
    from greenq import admin

    _, broker = _broker(args)
    if args.json:
        print(json.dumps(admin.status(broker), indent=2, default=str))
        return 0
    rounds = 0
    while True:
        screen = render_status(admin.status(broker))
        if args.watch:
            sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  greenq status --watch\n\n"))
        print(screen, flush=True)
        rounds += 1
        if not args.watch or (args.count and rounds >= args.count):
            return 0
        time.sleep(args.interval)


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
    app, broker = _broker(args)
    selected = _select_workers(broker, args.destination)
    out: dict[str, Any] = {}
    for worker in selected:
        if args.what == "active":
            clock = time.time()
            out[worker["consumer"]] = [
                {**a, "runtime_s": round(clock - a["started"], 3)} if "started" in a else a
                for a in worker.get("active", [])
            ]
        elif args.what == "reserved":
            out[worker["consumer"]] = {"reserved": worker.get("reserved", 0), "held": worker.get("held", 0)}
        elif args.what == "registered":
            out[worker["consumer"]] = worker.get("tasks", sorted(app.tasks))
        else:
            out[worker["consumer"]] = {k: v for k, v in worker.items() if k != "active"}
    print(json.dumps(out, indent=2, default=str))
    return 0


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
    from greenq import admin

    _, broker = _broker(args)
    ready = admin.queue_stats(broker, args.queue).ready if args.queue in admin.known_queues(broker) else 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("greenq: error: refusing to purge without --yes (no terminal to confirm)", file=sys.stderr)
            return 1
        answer = input(f"Delete {ready:,} ready messages from queue {args.queue!r}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("aborted")
            return 1
    removed = admin.purge(broker, args.queue, _progress("purged"))
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


def cmd_events(args: argparse.Namespace) -> int:
    """Tail the task events stream live (workers need worker_send_task_events)."""
    from greenq.broker.redis import Keys

    _, broker = _broker(args)
    shown, last = 0, "0-0" if args.from_start else "$"
    with broker.guard():
        while args.count is None or shown < args.count:
            reply = broker.client.xread({Keys.EVENTS: last}, count=100, block=1000)
            for entry_id, fields in reply[0][1] if reply else []:
                last = entry_id
                event = json.loads(fields[b"e"])
                if args.task and event.get("task") != args.task:
                    continue
                print(
                    json.dumps(event)
                    if args.json
                    else f"{time.strftime('%H:%M:%S', time.localtime(event['time']))} {event['event']:<9} "
                    f"{event['task']}[{event['id']}] {event.get('error') or ''}".rstrip(),
                    flush=True,
                )
                shown += 1
                if args.count is not None and shown >= args.count:
                    break
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from greenq.metrics import QueueCollector, serve

    _, broker = _broker(args)
    broker.ping()
    serve(QueueCollector(broker), args.port, args.address)
    print(f"serving queue metrics on http://{args.address}:{args.port}/metrics", flush=True)
    while True:
        time.sleep(3600)


def _queue_or_ids(broker: Any, target: list[str]) -> tuple[str | None, list[str]]:
    from greenq import admin

    if len(target) == 1 and target[0] in admin.known_queues(broker):
        return target[0], []
    return None, target


def add_commands(subs: Any, add_app_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    status = subs.add_parser("status", help="queues and workers at a glance")
    add_app_flags(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="refresh in place like top")
    status.add_argument("--interval", type=float, default=2.0)
    status.add_argument("--count", type=int, help="with --watch: stop after this many screens")
    status.set_defaults(handler=cmd_status)

    inspect = subs.add_parser("inspect", help="what workers run, hold and know (from heartbeats)")
    add_app_flags(inspect)
    inspect.add_argument("what", choices=["active", "reserved", "registered", "stats"])
    inspect.add_argument("-d", "--destination", help="worker name or consumer id")
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
