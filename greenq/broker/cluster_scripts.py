"""Redis Cluster, the scripts whose keys span slots: split into per-slot calls, replies merged.

Every greenq script touches one queue's keys (one slot), but some also read keys tagged by task
or consumer id. ``cluster.ClusterRouter`` runs them through ``split_all``: ``store_results.lua``
becomes one call per result, ``start.lua`` one call per queue then ``EXISTS`` of each revocation
key, and ``recover.lua`` and ``release_held.lua`` get a stand-in (a key of their queue's slot that
never exists) for the dead worker's heartbeat, which the router checks just before (``heartbeat``
names it): if the worker is back, the script is not run at all. Imports: redis (the slot hash).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.crc import key_slot

Command = tuple[Any, ...]
Merge = Callable[[list[Any]], Any]


def name_of(command: Command) -> str:
    first = command[0]
    return first.decode().upper() if isinstance(first, bytes) else str(first).upper()


def slot(key: Any) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


@cache
def script(name: str) -> str:
    return resources.files("greenq.broker").joinpath("scripts").joinpath(f"{name}.lua").read_text()


def heartbeat(command: Command) -> Any:
    """The heartbeat key a recover.lua or release_held.lua call checks, else None."""
    if name_of(command) != "EVAL":
        return None
    if command[1] == script("recover"):
        return command[3 + 2]
    if command[1] == script("release_held"):
        return command[3]
    return None


def _back(_: list[Any]) -> Any:
    return [0, [], -1]  # recover.lua's answer when the heartbeat is back


def _back_held(_: list[Any]) -> Any:
    return -1  # release_held.lua's


def split_all(
    commands: Sequence[Sequence[Any]], alive: dict[Any, bool]
) -> tuple[list[Command], list[tuple[int, Merge | None]]]:
    parts: list[Command] = []
    merges: list[tuple[int, Merge | None]] = []
    for command in commands:
        command = tuple(command)
        beat = heartbeat(command)
        if beat is not None and alive.get(beat):  # the worker is back: the script would do nothing
            merges.append((0, _back if command[1] == script("recover") else _back_held))
            continue
        split = _split(command) if name_of(command) == "EVAL" else None
        if split is None:
            parts.append(command)
            merges.append((1, None))
        else:
            pieces, merge = split
            parts += pieces
            merges.append((len(pieces), merge))
    return parts, merges


def merge(replies: list[Any], merges: list[tuple[int, Merge | None]]) -> list[Any]:
    out, at = [], 0
    for count, merge in merges:
        chunk = replies[at : at + count]
        at += count
        failed = next((r for r in chunk if isinstance(r, Exception)), None)
        out.append(failed if failed is not None else (merge(chunk) if merge else chunk[0]))
    return out


def _split(command: Command) -> tuple[list[Command], Merge] | None:
    body, numkeys = command[1], int(command[2])
    keys, argv = list(command[3 : 3 + numkeys]), list(command[3 + numkeys :])
    if body == script("store_results") and numkeys > 1:
        pieces = [("EVAL", body, 1, key, argv[0], argv[i + 1]) for i, key in enumerate(keys)]
        return pieces, lambda replies: sum(int(r) for r in replies)
    if body == script("start"):
        return _split_start(body, keys, argv)
    if body == script("recover"):  # KEYS[3], the heartbeat (checked first), to a stand-in
        return [("EVAL", body, numkeys, *keys[:2], _stand_in(keys[0]), *keys[3:], *argv)], lambda r: r[0]
    if body == script("release_held"):
        return _split_release_held(body, keys, argv)
    return None


def _stand_in(key: Any) -> str:
    """A key that never exists, in ``key``'s slot (its hash tag), under its prefix."""
    text = key.decode() if isinstance(key, bytes) else str(key)
    start = text.find("{")
    end = text.find("}", start + 1)
    tag = text[start : end + 1] if start >= 0 and end > start + 1 else "{" + text + "}"
    return f"{text.split(':', 1)[0]}:cluster-none:{tag}"


def _split_start(body: str, keys: list[Any], argv: list[Any]) -> tuple[list[Command], Merge]:
    """start.lua: one call per queue slot with its early acks, then EXISTS of each revocation."""
    early = int(argv[1])
    late = int(argv[3 + early]) if len(argv) > 3 + early else 0
    streams, markers = keys[:early], keys[early : 2 * early]
    late_streams, revoked = keys[2 * early : 2 * early + late], keys[2 * early + late :]
    ids, mode, late_ids = argv[2 : 2 + early], argv[2 + early], argv[4 + early : 4 + early + late]
    by_slot: dict[int, list[int]] = {}
    for i, stream in enumerate(streams):
        by_slot.setdefault(slot(stream), []).append(i)
    pieces: list[Command] = []
    order: list[list[int]] = []
    for members in by_slot.values():
        own = [streams[i] for i in members] + [markers[i] for i in members]
        pieces.append(("EVAL", body, len(own), *own, argv[0], len(members), *[ids[i] for i in members], mode))
        order.append(members)
    # late-ack messages: still pending here (not recovered by another worker)?
    pieces += [("XPENDING", key, argv[0], i, i, 1) for key, i in zip(late_streams, late_ids, strict=True)]
    pieces += [("EXISTS", key) for key in revoked]

    def merge(replies: list[Any]) -> str:
        held = ["0"] * early
        for members, flags in zip(order, replies[: len(order)], strict=True):
            text = flags.decode() if isinstance(flags, bytes) else str(flags)
            for i, flag in zip(members, text, strict=True):
                held[i] = flag
        pending = replies[len(order) : len(order) + late]
        exists = replies[len(order) + late :]
        return (
            "".join(held)
            + "".join("1" if r else "0" for r in pending)
            + "".join("1" if int(r) else "0" for r in exists)
        )

    return pieces, merge


def _split_release_held(body: str, keys: list[Any], argv: list[Any]) -> tuple[list[Command], Merge]:
    """release_held.lua: the heartbeat checked first, then one call per unique-key slot (with
    stand-ins for the heartbeat and the hash), then the hash deleted."""
    held, uniques = keys[1], keys[2:]
    by_slot: dict[int, list[int]] = {}
    for i, key in enumerate(uniques):
        by_slot.setdefault(slot(key), []).append(i)
    pieces: list[Command] = []
    for members in by_slot.values():
        first = uniques[members[0]]
        own = [uniques[i] for i in members]
        pieces.append(
            (
                "EVAL",
                body,
                2 + len(own),
                _stand_in(first),
                _stand_in(first),
                *own,
                *[argv[i] for i in members],
            )
        )
    pieces.append(("DEL", held))

    def merge(replies: list[Any]) -> int:
        return sum(int(r) for r in replies[:-1])

    return pieces, merge
