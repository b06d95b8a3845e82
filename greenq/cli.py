"""The ``greenq`` command: worker, config, send, result, revoke, embedded, demo (the operator
commands are in ``greenq.ops_cli``).

Decides gevent monkey-patching from argv *before* importing redis, requests or the user's app
(``greenq worker --pool gevent`` is the default). Top-level imports: stdlib and
``greenq.loader`` (stdlib only itself). Flags are validated by argparse types; errors are one
clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Any, NoReturn

from greenq.loader import app_for_command

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed pipeline writer
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _pool_from_argv(argv: list[str]) -> str:
    """The pool a ``worker`` command asks for: --pool/-P, else GREENQ_WORKER_POOL, else gevent."""
    for index, arg in enumerate(argv):
        if arg in ("--pool", "-P") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
    return os.environ.get("GREENQ_WORKER_POOL", "gevent")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``greenq send: error: ...; see greenq send --help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``greenq`` console script and ``python -m greenq``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    worker = args_list[:1] == ["worker"]
    if worker:
        import gc

        gc.disable()  # the imports allocate much and free little; worker.main.tune_gc turns it on
    gevent_worker = worker and _pool_from_argv(args_list) == "gevent"
    if gevent_worker or args_list[:1] == ["dashboard"]:  # the dashboard is served by gevent.pywsgi
        from greenq.pools.gevent import patch

        patch()
    parser = build_parser(only_worker=worker)
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from greenq.exceptions import GreenqError

    try:
        return int(args.handler(args) or 0)
    except GreenqError as exc:
        print(f"greenq: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (greenq config | head): stop quietly, and keep the interpreter's
        # final flush of stdout from raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def version() -> str:
    """greenq's version: ``greenq.__version__``, else the installed distribution's."""
    import greenq

    found = getattr(greenq, "__version__", None)
    if found:
        return str(found)
    from importlib.metadata import version as dist_version

    return dist_version("greenq")


def _setup_logging(level: str, fmt: str = "text", worker: str | None = None) -> None:
    from greenq.logs import configure

    configure(level, fmt, worker)


# ---- commands ----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from greenq.loader import apply_flags, check_broker_url, load_app

    _setup_logging(args.loglevel, args.log_format, args.hostname.replace("%h", os.uname().nodename))
    if args.processes not in (None, "1"):
        import socket

        from greenq.worker import supervisor

        group = args.hostname.replace("%h", socket.gethostname()).replace("%p", str(os.getpid()))
        argv = supervisor.strip_processes(sys.argv[sys.argv.index("worker") + 1 :])
        return supervisor.run_group(argv, supervisor.resolve(args.processes), group)
    app = load_app(args.app)
    overrides = apply_flags(app, args)
    if app.conf.broker_url:
        check_broker_url(app.conf.broker_url)
    wanted = app.conf.worker_pool
    monkey = sys.modules.get("gevent.monkey")
    patched = bool(monkey and monkey.is_module_patched("socket"))
    if (wanted == "gevent") != patched:
        # The pool came from a config file or env; patching must happen before imports.
        os.execv(sys.executable, [sys.executable, "-m", "greenq", *sys.argv[1:], "--pool", wanted])
    import socket

    name = args.hostname.replace("%h", socket.gethostname()).replace("%p", str(os.getpid()))
    from greenq.worker.execute import ChildApp
    from greenq.worker.main import run_worker

    extra = None
    if args.group:  # a child of --processes: "<group>:<index>/<count>"
        group, _, member = args.group.rpartition(":")
        extra = {"group": group, "member": member}
        name = f"{name}#{member.split('/')[0]}"
    return run_worker(
        app,
        name=name,
        child_app=ChildApp(args.app, args.config, overrides, (args.loglevel, args.log_format, name)),
        metrics_port=args.metrics_port,
        extra_info=extra,
        schedule=not args.no_schedule,
    )


def cmd_config(args: argparse.Namespace) -> int:
    from greenq.config import describe
    from greenq.exceptions import BrokerUnavailable

    try:
        app = app_for_command(args, may_start=False)
        missing = None
    except BrokerUnavailable as exc:  # still worth showing every other setting
        from greenq.loader import apply_flags, load_app

        app = load_app(args.app)
        apply_flags(app, args)
        missing = str(exc)
    rows = describe(app.conf, app.conf_origin)
    width = max(len(r[0]) for r in rows)
    for name, value, source, _doc in rows:
        if name == "broker_url" and missing:
            value, source = "(none)", "not configured; no embedded Redis running"
        print(f"{name:<{width}}  {value:<40}  ({source})")
    if missing:
        print(f"greenq: {missing}", file=sys.stderr)
    return 0


def check_registered(app: Any, name: str) -> None:
    """Refuse a task name the app does not know, before anything is enqueued.

    Raises:
        NotRegistered: with the closest registered name (difflib), as unknown settings do.
    """
    from greenq.exceptions import NotRegistered

    known = sorted(app.tasks)
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    close = close or [k for k in known if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]][:1]
    hint = (
        f"; did you mean {close[0]!r}?"
        if close
        else f"; it knows {len(known)} task(s): greenq inspect registered"
    )
    raise NotRegistered(f"unknown task {name!r} for app {app.name!r}{hint}")


def cmd_send(args: argparse.Namespace) -> int:
    import orjson

    from greenq.exceptions import ConfigError

    app = app_for_command(args, may_start=True)
    try:
        call_args = orjson.loads(args.args) if args.args else []
        call_kwargs = orjson.loads(args.kwargs) if args.kwargs else {}
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ConfigError("ARGS must be a JSON list and --kwargs a JSON object")
    if args.app:  # without -A the name cannot be checked here: any worker's app may know it
        check_registered(app, args.task)
    result = app.send_task(args.task, call_args, call_kwargs, queue=args.queue, countdown=args.countdown)
    print(result.id, flush=True)
    if args.wait is not None:
        # FAILURE, REVOKED (TaskError) and a timeout (ResultTimeout) raise: one line, exit 1.
        print(orjson.dumps(result.get(timeout=args.wait), default=str).decode())
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    import orjson

    app = app_for_command(args, may_start=False)
    result = app.AsyncResult(args.id)
    if args.wait is not None:
        result.get(timeout=args.wait, propagate=False)
    info = result.info or {"id": args.id, "state": "PENDING"}
    print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from greenq.admin import revoke_report

    app = app_for_command(args, may_start=False)
    app.control.revoke(args.ids, terminate=args.terminate)
    for line in revoke_report(app, args.ids, args.terminate):
        print(line)
    return 0


def cmd_embedded(args: argparse.Namespace) -> int:
    from greenq.embedded import EmbeddedRedis, lookup_note

    embedded = EmbeddedRedis()
    if args.action == "start":
        print(embedded.ensure_running())
    elif args.action == "stop":
        print("stopped" if embedded.stop() else f"not running ({lookup_note()})")
    else:
        if not embedded.is_running():
            print(f"not running ({lookup_note()}); it would start in {embedded.home}")
            return 1
        print(f"running: {embedded.url} (pid {embedded.pid()}, home {embedded.home})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from greenq.demo.run import run_demo

    return run_demo(tasks=args.tasks, concurrency=args.concurrency, delay_ms=args.delay_ms)


# ---- parser ------------------------------------------------------------------------


def _add_app_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-A", "--app", help="module (or module:attribute) holding the GreenQ app")
    sub.add_argument("-b", "--broker", help="broker URL (overrides GREENQ_BROKER_URL and config)")
    sub.add_argument("--config", help="Python config file or module (like config_from_object)")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _number(kind: type, low: float, label: str) -> Any:
    """An argparse type: ``kind`` (int or float) at least ``low``; the error names the range."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {label}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is not {label}")
        return value

    parse.__name__ = label  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, "a whole number >= 1")
non_negative_int = _number(int, 0, "a whole number >= 0")
positive_float = _number(float, 1e-9, "a number of seconds > 0")


def _loglevel(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def _add_worker(subs: Any) -> None:
    worker = subs.add_parser("worker", help="run a worker")
    _add_app_flags(worker)
    worker.add_argument("-P", "--pool", choices=["gevent", "prefork", "solo"])
    worker.add_argument("-c", "--concurrency", type=positive_int, help="task slots, >= 1")
    worker.add_argument("-Q", "--queues", type=_csv, help="comma-separated, highest precedence first")
    worker.add_argument("-n", "--hostname", default="worker@%h", help="worker name; %%h = host, %%p = pid")
    worker.add_argument(
        "-l", "--loglevel", default="INFO", type=_loglevel, metavar="LEVEL", help="|".join(LOG_LEVELS)
    )
    worker.add_argument(
        "--no-schedule",
        action="store_true",
        help="do not fire the app's periodic schedules from this worker (others, or greenq beat, do)",
    )
    worker.add_argument(
        "-E",
        "--events",
        action="store_const",
        const=True,
        help="send task events (worker_send_task_events) for greenq events",
    )
    worker.add_argument("--prefetch-multiplier", type=positive_int)
    worker.add_argument("--lost-timeout", type=positive_float, help="worker_lost_timeout in seconds")
    worker.add_argument("--shutdown-timeout", type=_number(float, 0, "a number of seconds >= 0"))
    worker.add_argument("--max-tasks-per-child", type=positive_int)
    worker.add_argument("--max-memory-per-child", type=positive_int, help="KiB")
    worker.add_argument("--time-limit", type=positive_float)
    worker.add_argument(
        "--cpu-workers", type=non_negative_int, help="gevent: child processes for cpu=True tasks"
    )
    worker.add_argument(
        "--cpu-nice", type=int, help="gevent: niceness added to the cpu=True children (default 10)"
    )
    worker.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="json: one object a line"
    )
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    worker.add_argument("--processes", help="run N worker processes (auto = one per core) under a supervisor")
    worker.add_argument("--group", help=argparse.SUPPRESS)  # set by the supervisor for its children
    worker.add_argument("--soft-time-limit", type=positive_float)
    worker.set_defaults(handler=cmd_worker)


def build_parser(only_worker: bool = False) -> argparse.ArgumentParser:
    """The command line; ``only_worker``: the worker command alone, which is all ``greenq
    worker ...`` parses (the other commands' parsers and modules are start-up it need not pay)."""
    parser = Parser(prog="greenq", description="greenq task queue")
    parser.add_argument("--version", action="version", version=f"greenq {version()}")
    subs = parser.add_subparsers(metavar="COMMAND", parser_class=Parser)
    _add_worker(subs)
    if only_worker:
        return parser

    cfg = subs.add_parser("config", help="print every effective setting and where it came from")
    _add_app_flags(cfg)
    cfg.set_defaults(handler=cmd_config)

    send = subs.add_parser("send", help="enqueue a task by name")
    _add_app_flags(send)
    send.add_argument("task")
    send.add_argument("args", nargs="?", help="JSON list of positional arguments")
    send.add_argument("--kwargs", help="JSON object of keyword arguments")
    send.add_argument("-q", "--queue")
    send.add_argument("--countdown", type=float)
    send.add_argument(
        "--wait",
        type=positive_float,
        nargs="?",
        const=60.0,
        help="wait for the result (seconds); exit 1 if it failed, was revoked or is not ready",
    )
    send.set_defaults(handler=cmd_send)

    result = subs.add_parser("result", help="show a task's state and result")
    _add_app_flags(result)
    result.add_argument("id")
    result.add_argument("--wait", type=positive_float, help="wait up to this many seconds for it to be ready")
    result.set_defaults(handler=cmd_result)

    revoke = subs.add_parser("revoke", help="revoke tasks that have not started")
    _add_app_flags(revoke)
    revoke.add_argument("ids", nargs="+")
    revoke.add_argument(
        "--terminate", action="store_true", help="also stop it if it is running (greenlet or prefork child)"
    )
    revoke.set_defaults(handler=cmd_revoke)

    embedded = subs.add_parser("embedded", help="the embedded redis-server (nearest .greenq/ upwards)")
    embedded.add_argument("action", choices=["status", "start", "stop"])
    embedded.set_defaults(handler=cmd_embedded)

    from greenq import acl, celery_config, ops_cli, schedule_cli

    acl.add_command(subs)
    celery_config.add_command(subs)
    ops_cli.add_commands(subs, _add_app_flags)
    schedule_cli.add_commands(subs, _add_app_flags)
    from greenq.dashboard import server as dashboard_server

    dashboard_server.add_command(subs, _add_app_flags)

    demo = subs.add_parser("demo", help="run HTTP tasks through a local worker and show the figures")
    demo.add_argument("--tasks", type=positive_int, default=3000)
    demo.add_argument("-c", "--concurrency", type=positive_int, default=500)
    demo.add_argument("--delay-ms", type=non_negative_int, default=100)
    demo.set_defaults(handler=cmd_demo)
    return parser
