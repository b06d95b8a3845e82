"""gevent's plugin lookup during ``monkey.patch_all()``, without parsing every installed package.

gevent asks ``importlib.metadata.entry_points(group=...)`` for plugins once per module it
patches, and each call reads and parses the entry points of every installed distribution. Only
a few declare gevent plugins (gevent itself does): a plain text search of the
``entry_points.txt`` files on ``sys.path`` for ``gevent.plugins`` finds them, and only theirs
are parsed. Where that search cannot see every distribution (a zip file or an egg on the path, a
finder of its own), one full scan, each group selected from it. Imports: stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from importlib.machinery import PathFinder
from typing import Any

GROUPS = "gevent.plugins"  # the prefix of every group gevent looks up (gevent.events)
MARK = GROUPS.encode()
METADATA_DIRS = (".dist-info", ".egg-info")


def plugin_distributions() -> list[str] | None:
    """The metadata directories on ``sys.path`` whose entry points mention gevent plugins, the
    first of each project as ``importlib.metadata`` takes it; None if some cannot be searched."""
    if any(f is not PathFinder and hasattr(f, "find_distributions") for f in sys.meta_path):
        return None  # a finder of its own (a PEX, a zip app) may hold distributions
    found, seen = [], set()
    for entry in sys.path:
        path = entry or "."
        if os.path.isfile(path):
            return None  # a zip on the path: its metadata is not a file to read
        try:
            names = sorted(os.listdir(path))
        except OSError:
            continue  # a directory that is not there holds nothing
        for name in names:
            if name.endswith(".egg"):
                return None  # an egg keeps its metadata inside (EGG-INFO)
            if not name.endswith(METADATA_DIRS):
                continue
            project = re.sub(r"[-_.]+", "_", name.rsplit(".", 1)[0].split("-", 1)[0]).lower()
            if project in seen:
                continue
            seen.add(project)
            with contextlib.suppress(OSError), open(os.path.join(path, name, "entry_points.txt"), "rb") as f:
                if MARK in f.read():
                    found.append(os.path.join(path, name))
    return found


@contextlib.contextmanager
def plugin_lookup() -> Iterator[None]:
    """While patching, ``importlib.metadata.entry_points`` answers gevent's lookups from the
    distributions that declare gevent plugins (or from one full scan, see the module)."""
    import importlib.metadata as metadata
    from pathlib import Path

    original = metadata.entry_points
    where = plugin_distributions()
    declared: list[Any]  # EntryPoints (typeshed has 3.11's full scan as SelectableGroups)
    if where is None:
        declared = [original()]
    else:
        declared = [metadata.PathDistribution(Path(directory)).entry_points for directory in where]

    def lookup(**params: Any) -> Any:
        if not str(params.get("group", "")).startswith(GROUPS):
            return original(**params)
        return metadata.EntryPoints(e for points in declared for e in points.select(**params))

    metadata.entry_points = lookup
    try:
        yield
    finally:
        metadata.entry_points = original
