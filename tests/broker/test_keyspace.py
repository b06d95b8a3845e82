"""The keyspace is written down where operators look, and built in one place: every key name
``broker.keys.Keys`` can build is documented in docs/keyspace.md, and no Lua script builds a
key of its own (each key comes in ``KEYS``, so Redis Cluster can route it and the docs see it)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from greenq.broker.keys import Keys

ROOT = Path(__file__).resolve().parent.parent.parent
PLACEHOLDERS = {
    "queue": "NAME",
    "task_id": "ID",
    "group_id": "ID",
    "consumer": "CONSUMER",
    "schedule": "SCHEDULE",
    "key": "KEY",
}


def _templates() -> set[str]:
    names = set()
    for attr, value in vars(Keys).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, str):
            names.add(value)
            continue
        function = getattr(Keys, attr)
        params = list(inspect.signature(function).parameters)
        if (
            params
            and all(p in PLACEHOLDERS for p in params)
            and attr != "bands"
            and attr != "bands_ascending"
        ):
            names.add(function(*(PLACEHOLDERS[p] for p in params)))
    names.add(Keys.stream("NAME"))
    names.add(Keys.stream("NAME", 5).replace(":p5", ":pP"))
    return names


def test_every_key_greenq_builds_is_documented_in_keyspace_md() -> None:
    doc = (ROOT / "docs" / "keyspace.md").read_text()
    table = {cell for cell in re.findall(r"^\| `([^`]+)`", doc, flags=re.MULTILINE)}
    missing = sorted(_templates() - table)
    assert not missing, f"keys without a row in docs/keyspace.md: {missing}"
    assert len(_templates()) >= 13


def test_no_lua_script_builds_a_key_name() -> None:
    """A key-shaped string (``...:...``) concatenated inside a script is a key built in Lua."""
    built = re.compile(r"\.\.\s*'[^']*:[^']*'|'[^']*:[^']*'\s*\.\.")
    for script in sorted((ROOT / "greenq" / "broker" / "scripts").glob("*.lua")):
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("--", 1)[0]
            assert not built.search(code), f"{script.name}:{number} builds a key: {line.strip()}"
