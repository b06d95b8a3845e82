"""``greenq check-celery-config MODULE``: what a Celery configuration becomes under greenq.

Reads a Celery config module (lowercase names, or Celery 3's UPPERCASE ones) or Django
settings (``CELERY_`` names) and prints, for each setting, whether it maps to a greenq setting
of the same name, is renamed, or is unsupported and why. Exit status 1 when anything is
unsupported or unknown, so it can run in CI. docs/migrating-from-celery.md has the same table.
Top-level imports: stdlib only (it runs in the CLI before anything heavy).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import runpy
import sys
import types
from typing import Any

# Celery name -> greenq setting with another name (and what differs).
RENAMED: dict[str, tuple[str, str]] = {
    "broker_connection_timeout": ("broker_connect_timeout", "seconds to open one connection"),
    "broker_connection_max_retries": (
        "broker_connection_timeout",
        "greenq's is the seconds a starting worker keeps retrying, not a count",
    ),
    "redis_max_connections": ("broker_pool_limit", ""),
    "redis_socket_timeout": ("broker_socket_timeout", ""),
    "redis_socket_connect_timeout": ("broker_connect_timeout", ""),
    "security_key": ("message_signing_key", "an HMAC-SHA256 shared key, not an X.509 key pair"),
    "task_queues": ("worker_queues", "queues need no declaration: list the names a worker consumes"),
    "worker_soft_shutdown_timeout": ("shutdown_timeout", "seconds a graceful stop waits for running tasks"),
}

_AMQP = "AMQP only; greenq speaks Redis"
_JSON = "greenq sends JSON only, never pickle: drop it"
_LOGS = "use greenq worker -l LEVEL --log-format text|json; records carry task_id and task_name"
_RESULTS = "results live in Redis (result_backend), with the task name, retries and worker"
UNSUPPORTED: dict[str, str] = {
    "accept_content": _JSON,
    "result_accept_content": _JSON,
    "task_serializer": _JSON,
    "result_serializer": _JSON,
    "event_serializer": _JSON,
    "task_compression": "messages are not compressed; keep arguments small (max_message_bytes)",
    "result_compression": "results are not compressed",
    "task_protocol": "greenq has its own envelope (docs/protocol.md)",
    "enable_utc": "greenq always works in UTC; timezone applies to cron schedules",
    "task_always_eager": "call the task directly (add(2, 3)) or run a worker on the embedded Redis",
    "task_eager_propagates": "no eager mode: call the task directly",
    "task_annotations": "set options on the task: @app.task(time_limit=..., acks_late=...)",
    "task_create_missing_queues": "already greenq's behaviour: queues exist once used",
    "task_default_exchange": _AMQP,
    "task_default_exchange_type": _AMQP,
    "task_default_routing_key": _AMQP,
    "task_default_delivery_mode": "messages are always persistent (Redis AOF/RDB decides durability)",
    "task_publish_retry": "enqueue raises BrokerUnavailable after broker_connect_timeout; retry yourself",
    "task_publish_retry_policy": "enqueue raises BrokerUnavailable after broker_connect_timeout",
    "task_reject_on_worker_lost": "already greenq's behaviour: a late-ack task whose process dies runs again",
    "task_acks_on_failure_or_timeout": "already greenq's behaviour: late-ack tasks are acked when they fail",
    "task_send_sent_event": "not supported: the task_sent event is not emitted",
    "task_store_errors_even_if_ignored": "not supported: ignore_result stores nothing",
    "task_inherit_parent_priority": "not supported: give priority= when enqueueing",
    "task_default_rate_limit": "give rate_limit= per task, or a queue's rate in queue_rate_limits",
    "worker_disable_rate_limits": "rate limits hold across all workers; greenq queue limit NAME 0 lifts one",
    "result_extended": _RESULTS,
    "result_persistent": _RESULTS,
    "result_backend_transport_options": _RESULTS,
    "result_chord_join_timeout": "chords count in Redis; there is no join",
    "broker_transport_options": "no visibility_timeout: liveness comes from heartbeats (worker_lost_timeout)",
    "broker_heartbeat": _AMQP,
    "broker_connection_retry": "already greenq's behaviour: a running worker always reconnects",
    "broker_use_ssl": "use a rediss:// URL (ssl_cert_reqs etc. as URL parameters)",
    "redis_backend_health_check_interval": "not needed: connections are checked at checkout",
    "redis_retry_on_timeout": "not supported: a timeout raises BrokerUnavailable",
    "redis_socket_keepalive": "not supported",
    "worker_hijack_root_logger": _LOGS,
    "worker_log_format": _LOGS,
    "worker_task_log_format": _LOGS,
    "worker_log_color": _LOGS,
    "worker_redirect_stdouts": "print() in a task goes to the worker's stdout as it is",
    "worker_redirect_stdouts_level": "print() in a task goes to the worker's stdout as it is",
    "worker_lost_wait": "not needed: a lost child's task gets WorkerLostError at once",
    "worker_proc_alive_timeout": "not supported",
    "worker_timer_precision": "not needed: due tasks move within ~100 ms",
    "worker_enable_remote_control": "greenq inspect reads worker heartbeats; there is no broadcast",
    "worker_direct": _AMQP,
    "worker_state_db": "not needed: revokes live in Redis",
    "worker_deduplicate_successful_tasks": "use unique enqueue (apply_async(unique=True), unique_for=)",
    "worker_cancel_long_running_tasks_on_connection_loss": "not supported",
    "beat_scheduler": "schedules are fired by workers (or greenq beat) and claimed once in Redis",
    "beat_max_loop_interval": "not needed: schedules are fired by workers",
    "beat_schedule_filename": "not needed: schedule state lives in Redis",
    "imports": "import task modules from the app module, or call app.autodiscover_tasks([...])",
    "include": "import task modules from the app module, or call app.autodiscover_tasks([...])",
    "security_certificate": "signing uses a shared HMAC key (message_signing_key)",
    "security_cert_store": "signing uses a shared HMAC key (message_signing_key)",
    "security_digest": "signing is HMAC-SHA256",
    "event_queue_expires": "events go to a capped Redis stream (worker_send_task_events)",
    "event_queue_ttl": "events go to a capped Redis stream (worker_send_task_events)",
    "cache_backend": _RESULTS,
    "database_url": _RESULTS,
}

# Celery 3 UPPERCASE names -> Celery 4+ names (the ones a typical project still has).
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_POOL_LIMIT": "broker_pool_limit",
    "BROKER_CONNECTION_TIMEOUT": "broker_connection_timeout",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "BROKER_USE_SSL": "broker_use_ssl",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERY_QUEUES": "task_queues",
    "CELERY_ANNOTATIONS": "task_annotations",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_REDIS_MAX_CONNECTIONS": "redis_max_connections",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_HIJACK_ROOT_LOGGER": "worker_hijack_root_logger",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_SCHEDULER": "beat_scheduler",
}


def _greenq_names() -> set[str]:
    from dataclasses import fields

    from greenq.config import Settings

    return {f.name for f in fields(Settings)}


def classify(key: str, known: set[str]) -> tuple[str, str, str]:
    """(verdict, Celery name, greenq name or why) for one attribute name of a config module.

    Verdicts: ``maps`` (same name in greenq), ``renamed``, ``unsupported``, ``unknown``.
    """
    name, old = key, ""
    if key in OLD_NAMES:
        name, old = OLD_NAMES[key], key
    elif key.startswith("CELERY_"):  # Django settings, namespace="CELERY"
        name = key[len("CELERY_") :].lower()
    if name in RENAMED:  # first: some are greenq names with another meaning
        target, note = RENAMED[name]
        return "renamed", name, f"{target}" + (f": {note}" if note else "")
    if name in known:
        return ("renamed", name, f"{name} (Celery 3 name {old})") if old else ("maps", name, name)
    if name in UNSUPPORTED:
        return "unsupported", name, UNSUPPORTED[name]
    everything = [*known, *RENAMED, *UNSUPPORTED]
    close = difflib.get_close_matches(name, everything, n=1)
    return (
        "unknown",
        name,
        f"not a setting greenq knows; did you mean {close[0]!r}?"
        if close
        else ("not a setting greenq knows"),
    )


def _load(target: str) -> Any:
    if target.endswith(".py") or os.sep in target:
        module = types.ModuleType(os.path.basename(target)[:-3])
        module.__dict__.update(runpy.run_path(target))
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(target)


def settings_of(module: Any) -> dict[str, Any]:
    """The Celery-looking settings of a module: lowercase public names that are not modules,
    functions or classes, and every ``CELERY``/``BROKER_`` UPPERCASE name."""
    found = {}
    for key, value in vars(module).items():
        if key.startswith("_") or isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        if key.islower() or key.startswith(("CELERY", "BROKER_")):
            found[key] = value
    return found


def report(module: Any) -> tuple[list[str], bool]:
    """Printable lines for a config module, and whether everything in it maps."""
    known = _greenq_names()
    rows = [(*classify(key, known), key) for key in sorted(settings_of(module))]
    lines = []
    for verdict in ("maps", "renamed", "unsupported", "unknown"):
        group = [row for row in rows if row[0] == verdict]
        if group:
            lines.append(f"{verdict} ({len(group)}):")
            lines.extend(f"  {key:<40} -> {detail}" for _, _, detail, key in group)
    clean = not any(row[0] in ("unsupported", "unknown") for row in rows)
    lines.append("everything maps" if clean else "some settings have no greenq equivalent (see above)")
    return lines, clean


def cmd_check(args: argparse.Namespace) -> int:
    from greenq.exceptions import ConfigError

    try:
        module = _load(args.module)
    except (ImportError, OSError) as exc:
        raise ConfigError(f"cannot load {args.module!r}: {exc}") from exc
    lines, clean = report(module)
    print("\n".join(lines))
    return 0 if clean else 1


def add_command(subs: Any) -> None:
    check = subs.add_parser(
        "check-celery-config",
        help="say what each setting of a Celery config module (or Django settings) becomes in greenq",
    )
    check.add_argument("module", help="dotted module name or path/to/file.py")
    check.set_defaults(handler=cmd_check)
