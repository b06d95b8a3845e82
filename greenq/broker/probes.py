"""Probes: the questions an idle worker asks about every one of its queues, over and over (is a
delayed message due? does another consumer of a band still live? is a queue paused?), each
answered by one script in one reply, however many queues.

On this path the reply count, not Redis, is what costs: redis-py reads each reply of a pipeline
on its own (a few microseconds each), so 100 queues asked with one ``ZRANGE`` each, ten times a
second, and ``EXISTS`` on their 1,000 bands every second, cost an idle worker more CPU than all
its wake-ups. ``due.lua``, ``consumers.lua`` and ``flows.lua`` read the same keys inside Redis
(skipping 50 absent keys at a time with one ``EXISTS``) and answer with the few that matter.
Each command is packed once per list of keys and sent as is while the worker idles. Redis
serves no other client while a script runs, so a long key list is split into several calls of
at most ``DUE_CHUNK`` or ``CONSUMERS_CHUNK`` keys (well under a millisecond each), sent in the
same round trip: 1,000 queues cost tens of replies, not tens of thousands, and no stall of
several milliseconds.

One Redis (or Sentinel) only: a script's keys must share a slot on a cluster, so there the
callers keep one command per key (``Link.cluster``). Imports: broker.stack only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from greenq.broker.stack import Link, script, text
from greenq.exceptions import BrokerError

DUE_CHUNK = 500  # delayed sets per due.lua call (a ZRANGE each only where one exists)
CONSUMERS_CHUNK = 100  # band streams per consumers.lua call (an XINFO each where one exists)


class Probes:
    """The scripted probes of one ``Link`` (not shared between threads), each packed once."""

    def __init__(self, link: Link) -> None:
        self.link = link
        # script -> (its keys, its other arguments, the calls packed, how many)
        self._packed: dict[str, tuple[Sequence[str], tuple[Any, ...], list[bytes], int]] = {}

    def _ask(self, name: str, keys: Sequence[str], chunk: int, *args: Any) -> list[Any]:
        """EVAL ``name`` with ``args`` on ``keys``, ``chunk`` keys per call, every call in one
        round trip: their replies (an error reply raises). Callers that keep passing the same
        ``keys`` object skip comparing them."""
        known = self._packed.get(name)
        if known is None or known[1] != args or (known[0] is not keys and list(known[0]) != list(keys)):
            parts = [keys[i : i + chunk] for i in range(0, len(keys), chunk)]
            calls = [("EVAL", script(name), len(part), *part, *args) for part in parts]
            known = self._packed[name] = (keys, args, self.link.pack(calls), len(calls))
        replies = self.link.send(known[2], known[3])
        for reply in replies:
            if isinstance(reply, Exception):
                raise BrokerError(f"{name}.lua failed: {reply}")
        return replies

    def due(self, delayed: Sequence[str]) -> tuple[list[int], float | None]:
        """Indexes of the delayed sets whose first member is due (server time), and seconds
        until the soonest of the others is (None: they are all empty)."""
        due: list[int] = []
        soonest: float | None = None
        for n, (server_ms, soonest_ms, *indexes) in enumerate(self._ask("due", delayed, DUE_CHUNK)):
            due += [n * DUE_CHUNK + int(i) - 1 for i in indexes]
            if soonest_ms >= 0:
                wait = max(0.0, (soonest_ms - server_ms) / 1000)
                soonest = wait if soonest is None else min(soonest, wait)
        return due, soonest

    def other_consumers(self, streams: Sequence[str], group: str, own: str) -> list[tuple[int, str]]:
        """(index in ``streams``, consumer) for every consumer of the existing ``streams`` other
        than ``own``. List the streams band by band (every queue's priority 9, then 8 ...):
        unused priorities then make whole runs of absent keys, skipped 50 at a time."""
        replies = self._ask("consumers", streams, CONSUMERS_CHUNK, group, own)
        return [
            (n * CONSUMERS_CHUNK + int(found[i]) - 1, text(found[i + 1]))
            for n, found in enumerate(replies)
            for i in range(0, len(found), 2)
        ]

    @staticmethod
    def flow_fields(count: int, found: Sequence[Any]) -> list[dict[str, str]]:
        """``flows.lua``'s reply for ``count`` flow hashes: each one's fields, in order ({} for
        the many that do not exist). The script rides in ``Channel.flow_upkeep``'s pipeline."""
        flows: list[dict[str, str]] = [{} for _ in range(count)]
        for i in range(0, len(found), 2):
            pairs = zip(found[i + 1][::2], found[i + 1][1::2], strict=True)
            flows[int(found[i]) - 1] = {text(k): text(v) for k, v in pairs}
        return flows


def band_major(streams: Sequence[str], per_queue: int) -> list[str]:
    """Queue by queue band lists (``Keys.bands`` of each queue, ``per_queue`` each) reordered
    band by band, for ``Probes.other_consumers``."""
    return [key for band in range(per_queue) for key in streams[band::per_queue]]
