"""``greenq acl --role worker|producer|operator [--prefix P]``: the least a Redis ACL user needs
to play one greenq role, as one ``ACL SETUSER`` command.

Key patterns come from ``broker.keys`` (the names greenq builds, under the app's ``key_prefix``),
so two apps with different prefixes get disjoint patterns and Redis itself keeps them apart.
Commands are listed by name; those of greenq's Lua scripts are read from the scripts themselves
(Redis checks each command a script runs against the caller's ACL; scripts are sent with
``EVAL``, never ``EVALSHA`` or ``FCALL``). Runs before any app is loaded: imports broker.keys only.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from greenq.broker.keys import Keys

# Scripts a producer runs (unique enqueue); workers run every script.
PRODUCER_SCRIPTS = ("enqueue_unique",)
_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?")
_CONTAINERS = {"xgroup", "xinfo", "client", "object", "memory", "script", "config"}

# Enqueue (XADD, ZADD to the delayed set, SADD of new queues, EVAL of the unique script), wait
# for and read results (XREAD BLOCK, XREVRANGE), forget (DEL), revoke (SET), groups and chords
# (RPUSH, LRANGE, HSET, PEXPIRE of their lists and hashes).
PRODUCER: tuple[str, ...] = (
    "xadd",
    "zadd",
    "sadd",
    "eval",
    "xread",
    "xrevrange",
    "del",
    "set",
    "rpush",
    "lrange",
)
PRODUCER += ("hset", "pexpire")
# Fetch, start, ack, retry, store results (XREADGROUP, XACK, XDEL, MULTI/EXEC and the scripts),
# heartbeats and the worker set, recovery (XINFO CONSUMERS, XPENDING), schedules (TIME, HGET),
# chords (HMGET), unique keys held (HGETALL); a task's next steps are enqueued as a producer does.
WORKER: tuple[str, ...] = (
    "xreadgroup",
    "xack",
    "xdel",
    "xgroup|create",
    "xinfo|consumers",
    "xpending",
    "multi",
    "exec",
)
WORKER += ("exists", "get", "srem", "hget", "hgetall", "hmget", "time")
WORKER += ("smembers",)  # flow control: the parked-message sets (HGETALL reads the flow hashes)
# Told of changes to delayed sets and queue controls instead of polling them (broker/tracking.py).
WORKER += ("client|id", "client|tracking", "subscribe", "ping")
WORKER_CHANNELS = ("__redis__:invalidate",)
# status, inspect, ping, peek, purge, dead list/show/requeue/purge, queue forget, events, result,
# revoke, send, schedule list (WATCH for queue forget; MGET of heartbeats; XINFO GROUPS for lag).
OPERATOR: tuple[str, ...] = (
    "smembers",
    "mget",
    "xlen",
    "zcard",
    "xrange",
    "xinfo|groups",
    "xdel",
    "exists",
    "get",
)
OPERATOR += ("srem", "hgetall", "time", "multi", "exec", "watch", "unwatch", "ping")
# queue pause/resume/limit (HSET, HDEL of the flow hash); the dashboard's delayed page (ZRANGE).
OPERATOR += ("hdel", "zrange")


@dataclass(frozen=True)
class Role:
    """What one role does, the key patterns it needs and the commands it sends."""

    doc: str
    commands: tuple[str, ...]
    scripts: tuple[str, ...] | None  # None: every script
    whole_keyspace: bool
    channels: tuple[str, ...] = ()  # Pub/Sub channels it subscribes to


ROLES = {
    "producer": Role(
        "enqueue, wait for and read results, forget, revoke (a web service)",
        PRODUCER,
        PRODUCER_SCRIPTS,
        whole_keyspace=False,
    ),
    "worker": Role(
        "run tasks: fetch, ack, retry, results, heartbeats, recovery, schedules (also greenq beat)",
        PRODUCER + WORKER,
        None,
        whole_keyspace=True,
        channels=WORKER_CHANNELS,
    ),
    "operator": Role(
        "the greenq operator commands: status, inspect, purge, dead, queue, events, result, send",
        PRODUCER + OPERATOR,
        PRODUCER_SCRIPTS,
        whole_keyspace=True,
    ),
}


def script_names() -> list[str]:
    folder = resources.files("greenq.broker").joinpath("scripts")
    return sorted(p.name[: -len(".lua")] for p in folder.iterdir() if p.name.endswith(".lua"))


def script_commands(names: tuple[str, ...] | None = None) -> set[str]:
    """The commands the given scripts (None: all) call, as ACL names (``xgroup|create``)."""
    folder = resources.files("greenq.broker").joinpath("scripts")
    found: set[str] = set()
    for name in script_names() if names is None else names:
        for command, sub in _CALL.findall(folder.joinpath(f"{name}.lua").read_text()):
            command = command.lower()
            found.add(f"{command}|{sub.lower()}" if command in _CONTAINERS and sub else command)
    return found


def key_patterns(role: str, prefix: str = "greenq") -> list[str]:
    """The role's key patterns under ``prefix``; ``ConfigError`` for an invalid prefix."""
    keys = Keys.with_prefix(prefix)
    if ROLES[role].whole_keyspace:
        return [f"{prefix}:*"]
    return [
        keys.stream("*") + "*",  # every priority band
        keys.delayed("*"),
        keys.unique("*", "*"),
        keys.chord("*", "*"),
        keys.QUEUES,
        keys.result("*"),
        keys.group("*"),
        keys.revoked("*"),
    ]


def commands(role: str) -> list[str]:
    found = set(ROLES[role].commands) | script_commands(ROLES[role].scripts)
    return sorted(found)


def rule(role: str, prefix: str = "greenq", user: str | None = None) -> str:
    """``ACL SETUSER`` for ``role``: it resets the user's keys, channels and commands, not its
    passwords (set them with ``ACL SETUSER <user> ><password>``)."""
    name = user or (f"greenq-{role}" if prefix == "greenq" else f"{prefix}-{role}")
    parts = ["ACL", "SETUSER", name, "on", "resetkeys", "resetchannels", "-@all"]
    parts += [f"~{pattern}" for pattern in key_patterns(role, prefix)]
    parts += [f"&{channel}" for channel in ROLES[role].channels]
    parts += [f"+{command}" for command in commands(role)]
    return " ".join(parts)


def cmd_acl(args: argparse.Namespace) -> int:
    print(rule(args.role, args.prefix, args.user))
    return 0


def add_command(subs: Any) -> None:
    acl = subs.add_parser(
        "acl",
        help="print the Redis ACL rule (ACL SETUSER) a role needs: worker, producer or operator",
        description="; ".join(f"{name}: {role.doc}" for name, role in ROLES.items()),
    )
    acl.add_argument("--role", required=True, choices=sorted(ROLES))
    acl.add_argument("--prefix", default="greenq", help="the app's key_prefix (default greenq)")
    acl.add_argument("--user", help="the ACL user name (default greenq-ROLE, or PREFIX-ROLE)")
    acl.set_defaults(handler=cmd_acl)
