"""Settings: every setting's name, type, default and meaning in one table, and how sources merge.

Sources, lowest precedence first: built-in defaults; code (``GreenQ(**settings)``,
``config_from_object``, ``--config``); ``GREENQ_<SETTING>`` environment variables; command-line
flags. An unknown name from any source is a ``ConfigError`` suggesting the closest known name,
and a value of the wrong type is a ``ConfigError`` naming setting, value and expected type
(Celery silently ignores both). Imports only ``exceptions`` and ``tls`` (the TLS options);
reads ``os.environ`` only when asked.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from greenq import shards, tls
from greenq.exceptions import ConfigError
from greenq.limits import check_queue_rates

ENV_PREFIX = "GREENQ_"
# Environment variables that start with the prefix but are not settings.
SIGNED_SETTINGS = frozenset({"worker_cpu_nice"})  # the only numbers that may be negative
ENV_NON_SETTINGS = frozenset({"GREENQ_HOME", "GREENQ_CEILING_DIRECTORIES", "GREENQ_DASHBOARD_AUTH"})


_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


def check_key_prefix(prefix: str) -> str:
    """A key prefix is letters, digits and ``_ . -`` (no ``:``, braces or glob characters), so
    that one app's ACL pattern ``<prefix>:*`` can never match another app's keys."""
    if not isinstance(prefix, str) or not _KEY_PREFIX.match(prefix):
        raise ConfigError(
            f"setting 'key_prefix' got {prefix!r}; expected 1-64 letters, digits and _ . -"
            " (no ':', braces, spaces or glob characters)"
        )
    return prefix


def _doc(text: str, secret: bool = False) -> dict[str, Any]:
    return {"doc": text, "secret": secret}


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Immutable: build a new one with :func:`build_settings`."""

    broker_url: str | None = field(
        default=None,
        metadata=_doc(
            "Redis URL (redis://, rediss://, unix://). None: the embedded redis-server under GREENQ_HOME.",
            secret=True,
        ),
    )
    result_backend: str | None = field(
        default=None,
        metadata=_doc("Must be unset or equal to broker_url: results live on the broker.", secret=True),
    )
    result_expires: float = field(default=86400.0, metadata=_doc("Seconds a result is kept."))
    result_extended: bool = field(
        default=False,
        metadata=_doc("Result records also carry the task's args, kwargs, queue and start time."),
    )
    broker_use_ssl: Any = field(
        default=None,
        metadata=_doc(
            "TLS: True or a dict of ssl_cert_reqs, ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_password,"
            " ssl_ca_path, ssl_check_hostname (Celery's names); folded into broker_url as rediss://"
            " query parameters, so every connection uses them (docs/security.md).",
            secret=True,
        ),
    )
    redis_backend_use_ssl: Any = field(
        default=None,
        metadata=_doc(
            "Celery's TLS setting for results: greenq keeps results on the broker, so unset or"
            " equal to broker_use_ssl.",
            secret=True,
        ),
    )
    broker_connect_timeout: float = field(
        default=5.0, metadata=_doc("Seconds to connect to Redis before BrokerUnavailable.")
    )
    broker_socket_timeout: float = field(
        default=10.0, metadata=_doc("Seconds a producer waits on one Redis reply before BrokerUnavailable.")
    )
    broker_pool_limit: int = field(
        default=1000,
        metadata=_doc("Producer connections to Redis; more concurrent callers wait for a free one."),
    )
    broker_connection_retry_on_startup: bool = field(
        default=True,
        metadata=_doc("A worker started while Redis is down retries with back-off instead of exiting."),
    )
    broker_connection_timeout: float = field(
        default=60.0,
        metadata=_doc(
            "Seconds a starting worker keeps retrying an unreachable broker before it exits"
            " (unlike Celery's setting of this name, not the time to open one connection:"
            " that is broker_connect_timeout)."
        ),
    )
    task_default_queue: str = field(default="default", metadata=_doc("Queue of tasks with no route."))
    task_routes: Any = field(
        default=None,
        metadata=_doc(
            "Dict of globs, list/tuple of routers ((glob|regex, route) pairs or callables), or a callable."
        ),
    )
    task_acks_late: bool = field(default=False, metadata=_doc("Ack after the task finishes (at-least-once)."))
    task_track_started: bool = field(default=False, metadata=_doc("Write state STARTED when a task starts."))
    task_ignore_result: bool = field(default=False, metadata=_doc("Write no results unless a task asks."))
    task_time_limit: float | None = field(default=None, metadata=_doc("Hard time limit in seconds."))
    task_soft_time_limit: float | None = field(default=None, metadata=_doc("Soft time limit in seconds."))
    task_default_priority: int = field(default=0, metadata=_doc("Priority 0 (lowest) to 9 (highest)."))
    task_unique_ttl: float = field(
        default=3600.0,
        metadata=_doc("Seconds a unique enqueue's key lives at most (unique=True without unique_for)."),
    )
    worker_pool: str = field(default="gevent", metadata=_doc("gevent, prefork or solo."))
    worker_concurrency: int | None = field(
        default=None,
        metadata=_doc("Task slots; None: 100 for gevent, the CPU count for prefork, 1 for solo."),
    )
    worker_prefetch_multiplier: int = field(
        default=4,
        metadata=_doc("A worker holds at most multiplier x concurrency messages (reserved + running)."),
    )
    worker_queues: list[str] | None = field(
        default=None, metadata=_doc("Queues to consume, highest precedence first; None: the default queue.")
    )
    worker_lost_timeout: float = field(
        default=10.0,
        metadata=_doc("Seconds after a worker's last heartbeat before its unacked messages are recovered."),
    )
    worker_max_tasks_per_child: int | None = field(
        default=None, metadata=_doc("Prefork: recycle a child after this many tasks.")
    )
    worker_max_memory_per_child: int | None = field(
        default=None, metadata=_doc("Prefork: recycle a child whose RSS passed this many KiB.")
    )
    worker_cpu_workers: int | None = field(
        default=None,
        metadata=_doc(
            "gevent: child processes for cpu=True tasks; None: CPU count if any task has cpu=True; 0: none."
        ),
    )
    worker_cpu_nice: int = field(
        default=10,
        metadata=_doc(
            "gevent: niceness added to the cpu=True child processes, so that the event loop wins"
            " the CPU when both want it; 0: same priority."
        ),
    )
    worker_adaptive_concurrency: bool = field(
        default=True,
        metadata=_doc(
            "gevent: while the event loop is CPU-saturated, run fewer than -c tasks at once (the"
            " same throughput with fewer connections and less memory); False: always up to -c."
        ),
    )
    worker_block_warning: float = field(
        default=0.1, metadata=_doc("gevent: log tasks that block the hub longer than this many seconds.")
    )
    worker_gc_threshold: int = field(
        default=10_000,
        metadata=_doc(
            "Allocations between collections of the youngest garbage-collector generation (Python's"
            " default: 700), with the worker's start-up objects frozen out of every collection;"
            " 0: leave the collector as Python sets it."
        ),
    )
    worker_send_task_events: bool = field(default=False, metadata=_doc("Emit task events to a stream."))
    worker_log_tasks: bool = field(
        default=True, metadata=_doc("Log one line per finished task (name, id, state, runtime) at INFO.")
    )
    shutdown_timeout: float = field(
        default=30.0, metadata=_doc("Seconds a graceful shutdown waits for running tasks.")
    )
    max_deliveries: int = field(
        default=5, metadata=_doc("Deliveries (counting worker deaths) before a message is dead-lettered.")
    )
    max_message_bytes: int = field(default=1024 * 1024, metadata=_doc("Largest encoded message accepted."))
    result_max_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=_doc("Largest encoded result stored; a task returning more fails (ResultTooLarge)."),
    )
    message_signing_key: str | None = field(
        default=None,
        metadata=_doc(
            "HMAC-SHA256 key: producers sign, workers reject unsigned or forged messages.", secret=True
        ),
    )
    message_signing_old_keys: list[str] | None = field(
        default=None, metadata=_doc("Older signing keys workers still accept, for key rotation.", secret=True)
    )
    dead_letter_max: int = field(default=10000, metadata=_doc("Dead letters kept per queue."))
    queue_rate_limits: dict[str, str] | None = field(
        default=None, metadata=_doc("Queue -> rate ('50/s', '10/m', '5/h') held by all workers together.")
    )
    queue_shards: dict[str, int] | None = field(
        default=None, metadata=_doc("Queue -> N: one hot queue over N streams NAME#0.. (docs/scaling.md).")
    )
    beat_schedule: dict[str, Any] | None = field(
        default=None,
        metadata=_doc(
            "Periodic tasks in Celery's format, {name: {task, schedule (seconds, timedelta, crontab),"
            " args, kwargs, options}}, plus tz, catch_up, max_catch_up, overlap (docs/schedules.md)."
        ),
    )
    timezone: str = field(
        default="UTC", metadata=_doc("IANA time zone of the cron schedules that name none (as Celery's).")
    )
    key_prefix: str = field(
        default="greenq",
        metadata=_doc(
            "First part of every Redis key name: apps with different prefixes share one Redis"
            " without meeting (docs/security.md)."
        ),
    )

    def get(self, name: str) -> Any:
        """The value of setting ``name``; ``ConfigError`` with a suggestion if unknown."""
        check_name(name, "Settings.get")
        return getattr(self, name)


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
SETTING_NAMES: tuple[str, ...] = tuple(_FIELDS)


def suggest(name: str) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest known setting, or ``""``."""
    close = difflib.get_close_matches(name, SETTING_NAMES, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_name(name: str, source: str) -> None:
    """Raise ``ConfigError`` if ``name`` is not a setting, naming the source and the closest name."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r} (from {source}){suggest(name)}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _to_number(kind: type) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        if kind is int and isinstance(value, float):
            raise ValueError
        return kind(value.strip() if isinstance(value, str) else value)

    return convert


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError


_CONVERTERS = {"bool": _to_bool, "int": _to_number(int), "float": _to_number(float), "str": _to_str}


def _coerce_scalar(kind: str, value: Any) -> Any:
    """Convert ``value`` to ``kind`` (int, float, bool, str); raise ValueError when it cannot."""
    return _CONVERTERS[kind](value)


def _shown(name: str, value: Any) -> str:
    """A rejected value as an error message shows it: never a secret setting's."""
    return "***" if _FIELDS[name].metadata.get("secret") else repr(value)


def coerce(name: str, value: Any, source: str) -> Any:
    """Validate and convert one setting's value; strings (env, CLI) are parsed by the setting's type."""
    check_name(name, source)
    annotation = str(_FIELDS[name].type)
    kinds = [part.strip() for part in annotation.split("|")]
    optional = "None" in kinds
    kind = next(k for k in kinds if k != "None")
    if name in ("broker_use_ssl", "redis_backend_use_ssl"):  # None, True or a dict
        return tls.check_options(name, value, source)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in {"", "none"}):
        if optional:
            return None
        raise ConfigError(f"setting {name!r} (from {source}) cannot be None; expected {kind}")
    if kind == "Any":
        return _parse_routes(name, value, source) if name == "task_routes" else value
    if kind.startswith("dict"):
        value = _parse_routes(name, value, source)  # JSON from the environment
        checks = {"queue_rate_limits": check_queue_rates, "queue_shards": shards.check}
        if isinstance(value, Mapping):
            return checks[name](value, source) if name in checks else dict(value)
        raise ConfigError(f"setting {name!r} (from {source}) got {_shown(name, value)}; expected a dict")
    if kind == "list[str]":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(
            f"setting {name!r} (from {source}) got {_shown(name, value)}; expected a list of strings"
        )
    try:
        value = _coerce_scalar(kind, value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"setting {name!r} (from {source}) got {_shown(name, value)}; expected {kind}"
        ) from None
    _check_range(name, value, source)
    return check_key_prefix(value) if name == "key_prefix" else value


def _check_range(name: str, value: Any, source: str) -> None:
    """NaN, infinity and negative sizes or times would start a worker that dies later or never
    writes its heartbeat: refused here, naming the setting."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and (not math.isfinite(value) or (value < 0 and name not in SIGNED_SETTINGS)):
        raise ConfigError(f"setting {name!r} (from {source}) got {value!r}; expected a finite number >= 0")


def _parse_routes(name: str, value: Any, source: str) -> Any:
    """``task_routes`` from the environment is JSON; from code it is kept as given."""
    if not isinstance(value, str):
        return value
    import orjson

    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ConfigError(
            f"setting {name!r} (from {source}) got {_shown(name, value)}; expected JSON"
        ) from None


Layer = tuple[str, Mapping[str, Any]]


def build_settings(layers: Iterable[Layer]) -> tuple[Settings, dict[str, str]]:
    """Merge layers (lowest precedence first) into Settings, and say where each value came from.

    Returns:
        The settings and a map of setting name to source ("default", "code", "environment",
        "command line", a file path, ...).
    """
    values: dict[str, Any] = {}
    origin = {name: "default" for name in SETTING_NAMES}
    for source, mapping in layers:
        for name, value in mapping.items():
            values[name] = coerce(name, value, source)
            origin[name] = source
    backend = values.get("result_backend")
    if backend is not None and backend != values.get("broker_url"):
        # NOTE: results live with the messages (a chord counts members in the round trip that
        # writes their results): a separate result store would be silently unused, so refuse it.
        raise ConfigError(
            f"setting 'result_backend' (from {origin['result_backend']}) is {mask_url(backend)}: greenq keeps"
            " results on the broker; leave it unset or equal to broker_url"
        )
    tls.fold(values)  # broker_use_ssl into broker_url: every connection is made from it
    shards.check_limits(values.get("queue_shards"), values.get("queue_rate_limits"))
    return Settings(**values), origin


def from_env(environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> dict[str, str]:
    """Settings from ``GREENQ_<SETTING>`` variables; an unknown ``GREENQ_*`` name is an error."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith(prefix) or key in ENV_NON_SETTINGS:
            continue
        name = key[len(prefix) :].lower()
        check_name(name, f"environment variable {key}")
        found[name] = value
    return found


def mask_url(url: str | None) -> str | None:
    """Hide a URL's password: ``redis://user:***@host:6379/0``."""
    if not url:
        return url
    parts = urlsplit(url)
    query = tls.mask_query(parts.query)  # redis-py also reads password= and ssl_password= there
    if parts.password is None and query == parts.query:
        return url
    parts = parts._replace(query=query)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{userinfo}:***@{netloc[1]}")
    return urlunsplit(parts)


def display_value(name: str, value: Any) -> str:
    """A setting's value as ``greenq config`` shows it: URLs masked, secrets hidden."""
    if value is not None and _FIELDS[name].metadata.get("secret"):
        if isinstance(value, str) and "://" in value:
            return str(mask_url(value))
        if isinstance(value, dict):  # TLS options: only the key's password is secret
            return repr({k: "***" if k in tls.SECRET_PARAMETERS else v for k, v in value.items()})
        return "***"
    return repr(value)


def describe(settings: Settings, origin: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """Rows of (name, shown value, source, meaning) for every setting, in table order."""
    return [
        (
            name,
            display_value(name, getattr(settings, name)),
            origin.get(name, "default"),
            _FIELDS[name].metadata.get("doc", ""),
        )
        for name in SETTING_NAMES
    ]
