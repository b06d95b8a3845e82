"""The ``greenq`` command: worker, config, send, result, purge, embedded, demo.

Decides gevent monkey-patching from argv *before* importing redis, requests or the user's app
(``greenq worker --pool gevent`` is the default). Top-level imports: stdlib only. Errors are
one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

EXIT_USAGE = 2


def _pool_from_argv(argv: list[str]) -> str:
    """The pool a ``worker`` command asks for: --pool/-P, else GREENQ_WORKER_POOL, else gevent."""
    for index, arg in enumerate(argv):
        if arg in ("--pool", "-P") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--pool="):
            return arg.split("=", 1)[1]
    return os.environ.get("GREENQ_WORKER_POOL", "gevent")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``greenq`` console script and ``python -m greenq``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["worker"] and _pool_from_argv(args_list) == "gevent":
        from greenq.pools.gevent import patch

        patch()
    parser = build_parser()
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


# ---- app loading -------------------------------------------------------------------


def load_app(spec: str | None) -> Any:
    """Import ``module`` or ``module:attribute`` and return its GreenQ app (``app`` or the only one)."""
    from greenq.app import GreenQ
    from greenq.exceptions import ConfigError

    if not spec:
        return GreenQ("greenq")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from exc
    if attribute:
        return getattr(module, attribute)
    if isinstance(getattr(module, "app", None), GreenQ):
        return module.app
    apps = [value for value in vars(module).values() if isinstance(value, GreenQ)]
    if len(apps) != 1:
        raise ConfigError(
            f"{module_name}: expected one GreenQ app, found {len(apps)}; use -A {module_name}:NAME"
        )
    return apps[0]


def _apply_common(app: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Apply --config and the flags; returns the flag overrides (prefork children reuse them)."""
    if getattr(args, "config", None):
        app.config_from_object(args.config)
    overrides: dict[str, Any] = {}
    if getattr(args, "broker", None):
        overrides["broker_url"] = args.broker
    for name, setting in WORKER_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            overrides[setting] = value
    if overrides:
        app.override(overrides, "command line")
    return overrides


WORKER_FLAGS = {
    "pool": "worker_pool",
    "concurrency": "worker_concurrency",
    "prefetch_multiplier": "worker_prefetch_multiplier",
    "queues": "worker_queues",
    "lost_timeout": "worker_lost_timeout",
    "shutdown_timeout": "shutdown_timeout",
    "max_tasks_per_child": "worker_max_tasks_per_child",
    "max_memory_per_child": "worker_max_memory_per_child",
    "time_limit": "task_time_limit",
    "cpu_workers": "worker_cpu_workers",
    "cpu_nice": "worker_cpu_nice",
    "soft_time_limit": "task_soft_time_limit",
}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="[%(asctime)s %(levelname)s/%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---- commands ----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.loglevel)
    if args.processes not in (None, "1"):
        import socket

        from greenq.worker import supervisor

        group = args.hostname.replace("%h", socket.gethostname()).replace("%p", str(os.getpid()))
        argv = supervisor.strip_processes(sys.argv[sys.argv.index("worker") + 1 :])
        return supervisor.run_group(argv, supervisor.resolve(args.processes), group)
    app = load_app(args.app)
    overrides = _apply_common(app, args)
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
        child_app=ChildApp(args.app, args.config, overrides),
        metrics_port=args.metrics_port,
        extra_info=extra,
    )


def cmd_config(args: argparse.Namespace) -> int:
    from greenq.config import describe

    app = load_app(args.app)
    _apply_common(app, args)
    rows = describe(app.conf, app.conf_origin)
    width = max(len(r[0]) for r in rows)
    for name, value, source, _doc in rows:
        print(f"{name:<{width}}  {value:<40}  ({source})")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    import orjson

    from greenq.exceptions import ConfigError

    app = load_app(args.app)
    _apply_common(app, args)
    try:
        call_args = orjson.loads(args.args) if args.args else []
        call_kwargs = orjson.loads(args.kwargs) if args.kwargs else {}
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ConfigError("ARGS must be a JSON list and --kwargs a JSON object")
    result = app.send_task(args.task, call_args, call_kwargs, queue=args.queue, countdown=args.countdown)
    print(result.id)
    if args.wait is not None:
        print(
            orjson.dumps(
                result.get(timeout=args.wait, propagate=False) if result else None, default=str
            ).decode()
        )
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    import orjson

    app = load_app(args.app)
    _apply_common(app, args)
    result = app.AsyncResult(args.id)
    if args.wait is not None:
        result.get(timeout=args.wait, propagate=False)
    info = result.info or {"id": args.id, "state": "PENDING"}
    print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    _apply_common(app, args)
    app.control.revoke(args.ids, terminate=args.terminate)
    print(f"revoked {len(args.ids)} task(s)")
    return 0


def cmd_embedded(args: argparse.Namespace) -> int:
    from greenq.embedded import EmbeddedRedis

    embedded = EmbeddedRedis()
    if args.action == "start":
        print(embedded.ensure_running())
    elif args.action == "stop":
        print("stopped" if embedded.stop() else "not running")
    else:
        running = embedded.is_running()
        state = "running" if running else "not running"
        print(f"{state}: {embedded.url} (pid {embedded.pid()}, home {embedded.home})")
        return 0 if running else 1
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greenq", description="greenq task queue")
    subs = parser.add_subparsers(metavar="COMMAND")

    worker = subs.add_parser("worker", help="run a worker")
    _add_app_flags(worker)
    worker.add_argument("-P", "--pool", choices=["gevent", "prefork", "solo"])
    worker.add_argument("-c", "--concurrency", type=int)
    worker.add_argument("-Q", "--queues", type=_csv, help="comma-separated, highest precedence first")
    worker.add_argument("-n", "--hostname", default="worker@%h", help="worker name; %%h = host, %%p = pid")
    worker.add_argument("-l", "--loglevel", default="INFO")
    worker.add_argument("--prefetch-multiplier", type=int)
    worker.add_argument("--lost-timeout", type=float, help="worker_lost_timeout in seconds")
    worker.add_argument("--shutdown-timeout", type=float)
    worker.add_argument("--max-tasks-per-child", type=int)
    worker.add_argument("--max-memory-per-child", type=int, help="KiB")
    worker.add_argument("--time-limit", type=float)
    worker.add_argument("--cpu-workers", type=int, help="gevent: child processes for cpu=True tasks")
    worker.add_argument(
        "--cpu-nice", type=int, help="gevent: niceness added to the cpu=True children (default 10)"
    )
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    worker.add_argument("--processes", help="run N worker processes (auto = one per core) under a supervisor")
    worker.add_argument("--group", help=argparse.SUPPRESS)  # set by the supervisor for its children
    worker.add_argument("--soft-time-limit", type=float)
    worker.set_defaults(handler=cmd_worker)

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
    send.add_argument("--wait", type=float, nargs="?", const=60.0, help="wait for the result (seconds)")
    send.set_defaults(handler=cmd_send)

    result = subs.add_parser("result", help="show a task's state and result")
    _add_app_flags(result)
    result.add_argument("id")
    result.add_argument("--wait", type=float, help="wait up to this many seconds for it to be ready")
    result.set_defaults(handler=cmd_result)

    revoke = subs.add_parser("revoke", help="revoke tasks that have not started")
    _add_app_flags(revoke)
    revoke.add_argument("ids", nargs="+")
    revoke.add_argument("--terminate", action="store_true", help="also kill it if it runs in a prefork child")
    revoke.set_defaults(handler=cmd_revoke)

    embedded = subs.add_parser("embedded", help="the embedded redis-server under ./.greenq")
    embedded.add_argument("action", choices=["status", "start", "stop"])
    embedded.set_defaults(handler=cmd_embedded)

    from greenq.ops_cli import add_commands

    add_commands(subs, _add_app_flags)

    demo = subs.add_parser("demo", help="run HTTP tasks through a local worker and show the figures")
    demo.add_argument("--tasks", type=int, default=3000)
    demo.add_argument("-c", "--concurrency", type=int, default=500)
    demo.add_argument("--delay-ms", type=int, default=100)
    demo.set_defaults(handler=cmd_demo)
    return parser
