"""Loading the user's app and applying command-line flags to it.

Used by the ``greenq`` command, the operator commands and prefork children (which rebuild the
app from the same recipe). Safe to import before gevent patching: top-level imports are stdlib
only; ``greenq.app``, ``greenq.embedded`` and the exceptions are imported inside functions.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Mapping
from typing import Any

# argparse dest -> setting, for the worker's flags (other commands have none of them).
WORKER_FLAGS: Mapping[str, str] = {
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
    "events": "worker_send_task_events",
}

BROKER_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


def load_app(spec: str | None) -> Any:
    """Import ``module`` or ``module:attribute`` and return its GreenQ app.

    Without an attribute, the module's ``app`` or its only GreenQ instance. No spec gives a bare
    app (settings from the environment and flags only), enough for operator commands.

    Raises:
        ConfigError: the module cannot be imported, the attribute is missing (with the closest
            name) or is not a GreenQ app, or the module holds zero or several apps.
    """
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
        if not hasattr(module, attribute):
            names = [name for name, value in vars(module).items() if isinstance(value, GreenQ)]
            close = difflib.get_close_matches(attribute, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; apps there: {', '.join(names) or 'none'}"
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}{hint}")
        app = getattr(module, attribute)
        if not isinstance(app, GreenQ):
            raise ConfigError(f"{spec} is a {type(app).__name__}, not a GreenQ app")
        return app
    if isinstance(getattr(module, "app", None), GreenQ):
        return module.app
    apps = [value for value in vars(module).values() if isinstance(value, GreenQ)]
    if len(apps) != 1:
        raise ConfigError(
            f"{module_name}: expected one GreenQ app, found {len(apps)}; use -A {module_name}:NAME"
        )
    return apps[0]


def check_broker_url(url: str) -> str:
    """Reject a broker URL redis-py could not use, before anything connects (one clear line)."""
    from greenq.config import mask_url
    from greenq.exceptions import ConfigError

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in BROKER_SCHEMES or not rest:
        raise ConfigError(
            f"malformed broker URL {mask_url(url)!r}: expected redis://[user:password@]host[:port][/db], "
            "rediss://... (TLS), unix:///path/to/socket, redis+sentinel://host:port[,host:port]/SERVICE[/db]"
            " or redis+cluster://host:port[,host:port]"
        )
    return url


def apply_flags(app: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Apply ``--config``, ``--broker`` and the worker's flags to ``app``.

    Flags beat every other source (they are the app's ``override`` layer, "command line").
    Returns the overrides, so a prefork child can rebuild the same app (``ChildApp``).
    """
    if getattr(args, "config", None):
        app.config_from_object(args.config)
    overrides: dict[str, Any] = {}
    if getattr(args, "broker", None):
        overrides["broker_url"] = check_broker_url(args.broker)
    for name, setting in WORKER_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            overrides[setting] = value
    if overrides:
        app.override(overrides, "command line")
    return overrides


def attach_existing_broker(app: Any) -> str:
    """The broker URL for a command that must not start a server.

    A configured URL is returned as it is (checked). Without one, the embedded server found
    by looking for ``.greenq/`` upwards from here is used if it runs (its URL becomes the app's
    ``broker_url``, from the source "embedded ..."); if none runs, nothing is started.

    Raises:
        BrokerUnavailable: no broker configured and no embedded server running; says where
            it looked.
    """
    from greenq.embedded import EmbeddedRedis, lookup_note
    from greenq.exceptions import BrokerUnavailable

    url = app.conf.broker_url
    if url:
        return check_broker_url(url)
    embedded = EmbeddedRedis()
    if not embedded.is_running():
        raise BrokerUnavailable(
            f"no broker: no broker_url configured (--broker, GREENQ_BROKER_URL, --config) and no "
            f"embedded Redis running ({lookup_note()}); `greenq embedded start` or a worker starts one"
        )
    app.override({"broker_url": embedded.url}, f"embedded redis-server in {embedded.home}")
    return str(embedded.url)


def app_for_command(args: argparse.Namespace, *, may_start: bool) -> Any:
    """Load ``-A``, apply the flags and settle the broker URL, as every command does first.

    ``may_start`` is True only for commands that put work somewhere (``worker``, ``send``):
    they may start the embedded server (it says where, on stderr). The others read what
    exists and never start one (``attach_existing_broker``).
    """
    app = load_app(getattr(args, "app", None))
    apply_flags(app, args)
    if app.conf.broker_url:
        check_broker_url(app.conf.broker_url)
    elif not may_start:
        attach_existing_broker(app)
    return app
