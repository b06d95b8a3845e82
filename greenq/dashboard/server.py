"""``greenq dashboard``: the dashboard on gevent's WSGI server, safe by default.

Bound to 127.0.0.1 unless ``--bind`` says otherwise; any other address needs ``--auth
USER:PASSWORD`` (or ``GREENQ_DASHBOARD_AUTH``) or an explicit ``--no-auth``, which prints a
warning. ``greenq.cli`` monkey-patches for gevent before this runs, so every request and the
live feed are greenlets. Top-level imports: stdlib only (the CLI builds its parser from here).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

AUTH_ENV = "GREENQ_DASHBOARD_AUTH"


def cmd_dashboard(args: argparse.Namespace) -> int:
    from greenq.dashboard import wsgi_app
    from greenq.dashboard.security import check_bind, parse_auth
    from greenq.loader import app_for_command

    # Read and removed before the app loads: every other GREENQ_* variable names a setting.
    auth = parse_auth(args.auth or os.environ.pop(AUTH_ENV, None))
    warning = check_bind(args.bind, auth, args.no_auth)
    app = app_for_command(args, may_start=False)
    app.broker.ping()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    serve(wsgi_app(app, read_only=args.read_only, auth=auth), args.bind, args.port)
    return 0


def serve(application: Any, bind: str, port: int) -> None:
    """Serve until the process is stopped; prints the URL (with the real port for ``--port 0``)."""
    from gevent.pywsgi import WSGIServer  # noqa: TID251 - the dashboard runs patched, like a worker

    server = WSGIServer((bind, port), application, log=None)
    server.start()
    host = f"[{bind}]" if ":" in bind else bind
    print(f"greenq dashboard: serving http://{host}:{server.server_port}/", flush=True)
    server.serve_forever()


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return value


def add_command(subs: Any, add_app_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    dashboard = subs.add_parser(
        "dashboard", help="serve the web dashboard (queues, workers, tasks, dead letters)"
    )
    add_app_flags(dashboard)
    dashboard.add_argument("--port", type=_port, default=5555, help="default 5555; 0 picks a free one")
    # --address and --basic-auth: Flower's names for the same flags.
    dashboard.add_argument(
        "--bind", "--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    dashboard.add_argument(
        "--auth", "--basic-auth", metavar="USER:PASSWORD", help=f"HTTP Basic credentials (or {AUTH_ENV})"
    )
    dashboard.add_argument(
        "--no-auth",
        action="store_true",
        help="serve beyond localhost without a password (a proxy authenticates)",
    )
    dashboard.add_argument("--read-only", action="store_true", help="hide every action; refuse any POST")
    dashboard.set_defaults(handler=cmd_dashboard)
