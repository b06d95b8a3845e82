"""Dead letters a page at a time, filtered by task or reason, and the bulk actions on them.

A page is a seek by entry id (``XRANGE``/``XREVRANGE … COUNT``), so the last page of 100,000
dead letters costs what the first does. A filter has to look at entries, so a filtered page
reads at most ``SCAN_MAX`` of them per request and hands back a cursor to go on from. Requeue
goes through ``greenq.admin.dead_requeue`` (signatures checked); delete is ``XDEL`` by id, in
batches. Imports: admin, broker.keys.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from greenq import admin

if TYPE_CHECKING:
    from greenq.broker.redis import RedisBroker

PAGE = 50
SCAN_MAX = 20_000  # entries a filtered page may read in one request
BATCH = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Filter:
    """Which dead letters: ``task`` is a name or glob (``shop.*``), ``reason`` a substring."""

    task: str = ""
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.task or self.reason)

    def matches(self, letter: dict[str, Any]) -> bool:
        if self.task:
            name = str(letter.get("task", ""))
            if not (name == self.task or fnmatch.fnmatchcase(name, self.task)):
                return False
        return not self.reason or self.reason.lower() in str(letter.get("reason", "")).lower()


@dataclass
class Page:
    queue: str
    total: int  # dead letters in the queue, matching or not
    letters: list[dict[str, Any]] = field(default_factory=list)
    prev: str | None = None  # cursor: the page before ends before this entry id
    next: str | None = None  # cursor: the page after starts after this entry id
    scanned: int = 0
    cut: bool = False  # a filtered read stopped at SCAN_MAX before the page was full


def page(
    broker: RedisBroker,
    queue: str,
    flt: Filter,
    after: str | None = None,
    before: str | None = None,
    size: int = PAGE,
) -> Page:
    """One page of ``queue``'s dead letters, oldest first, after the entry ``after`` (or, going
    back, the page ending before ``before``)."""
    key = broker.keys.dead(queue)
    client = broker.client
    with broker.guard():
        found = Page(queue, int(client.xlen(key)))
        backwards = before is not None and after is None
        cursor = before if backwards else after
        letters: list[dict[str, Any]] = []
        while len(letters) < size and found.scanned < SCAN_MAX:
            want = size - len(letters) if not flt else BATCH
            if backwards:
                batch = client.xrevrange(key, max=f"({cursor}" if cursor else "+", count=want)
            else:
                batch = client.xrange(key, min=f"({cursor}" if cursor else "-", count=want)
            if not batch:
                break
            for entry_id, fields in batch:
                found.scanned += 1
                cursor = _text(entry_id)
                letter = admin.describe_entry(entry_id, fields)
                if flt.matches(letter):
                    letters.append(letter)
                    if len(letters) >= size:
                        break
        found.cut = bool(flt) and found.scanned >= SCAN_MAX and len(letters) < size
        if backwards:
            letters.reverse()
        found.letters = letters
        if letters or found.cut:
            first = letters[0]["entry"] if letters else None
            last = cursor if found.cut and not backwards else (letters[-1]["entry"] if letters else None)
            found.prev = first if first and _exists(client, key, first, newer=False) else None
            found.next = last if last and _exists(client, key, last, newer=True) else None
    return found


def _exists(client: Any, key: str, entry: str, newer: bool) -> bool:
    """Is there any entry after (``newer``) or before ``entry``? One seek."""
    if newer:
        return bool(client.xrange(key, min=f"({entry}", count=1))
    return bool(client.xrevrange(key, max=f"({entry}", count=1))


def matching_ids(broker: RedisBroker, queue: str, flt: Filter) -> Iterator[list[str]]:
    """Every matching entry id of ``queue``'s dead letters, in batches (for the bulk actions).

    Only those there when it starts: a requeued task that fails again is dead-lettered anew
    behind the cursor and must not be met again (a bulk requeue would never end)."""
    key = broker.keys.dead(queue)
    with broker.guard():
        newest = broker.client.xrevrange(key, count=1)
    if not newest:
        return
    start, end = "-", _text(newest[0][0])
    while True:
        with broker.guard():
            batch = broker.client.xrange(key, min=start, max=end, count=BATCH)
        if not batch:
            return
        ids = [_text(e) for e, fields in batch if flt.matches(admin.describe_entry(e, fields))]
        if ids:
            yield ids
        start = f"({_text(batch[-1][0])}"


def requeue(
    broker: RedisBroker, queue: str, ids: list[str], flt: Filter | None, signing_keys: list[str]
) -> tuple[int, list[str]]:
    """Requeue ``ids``, or with ``flt`` every match (an empty filter: the whole queue)."""
    if flt is None:
        return admin.dead_requeue(broker, queue, ids, signing_keys)
    if not flt:
        return admin.dead_requeue(broker, queue, [], signing_keys)
    moved, refused = 0, []
    for batch in matching_ids(broker, queue, flt):
        done, why = admin.dead_requeue(broker, queue, batch, signing_keys)
        moved += done
        refused += why
    return moved, refused


def delete(broker: RedisBroker, queue: str, ids: list[str], flt: Filter | None) -> int:
    """Delete ``ids``, or with ``flt`` every match (an empty filter: the whole queue)."""
    if flt is not None and not flt:
        return admin.dead_purge(broker, queue)
    batches = matching_ids(broker, queue, flt) if flt is not None else _chunks(ids)
    removed = 0
    for batch in batches:
        with broker.guard():
            removed += int(broker.client.xdel(broker.keys.dead(queue), *batch))
    return removed


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


def counts(broker: RedisBroker, queues: list[str]) -> dict[str, int]:
    """Dead letters per queue (XLEN each, one round trip)."""
    with broker.guard():
        pipe = broker.client.pipeline(transaction=False)
        for name in queues:
            pipe.xlen(broker.keys.dead(name))
        return {name: int(n) for name, n in zip(queues, pipe.execute(), strict=True)}
