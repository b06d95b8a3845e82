"""greenq's patch() answers gevent's plugin lookups from the distributions that declare gevent
plugins, found by a text search, instead of a full metadata scan per patched module. Each test
patches a fresh interpreter (patching is for the whole process), with a distribution of its own
that declares a plugin, and checks that gevent still calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

PLUGIN = """
import json, os
def record(event):
    with open(os.environ["PLUGIN_LOG"], "a") as log:
        log.write(type(event).__name__ + "\\n")
"""

# In the child: count full scans (importlib.metadata.distributions), patch, report.
CHILD = """
import importlib.metadata as metadata, json, sys
scans = []
original = metadata.distributions
metadata.distributions = lambda **kw: scans.append(kw) or original(**kw)
from greenq.pools.gevent import patch
from greenq.pools.gevent_plugins import plugin_distributions
where = plugin_distributions()
patch()
import socket, gevent.socket
print(json.dumps({"scans": len(scans), "where": where, "patched": socket.socket is gevent.socket.socket}))
"""


def _plugin_dist(site: Path) -> None:
    (site / "greenq_probe_plugin.py").write_text(PLUGIN)
    info = site / "greenq_probe_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: greenq-probe-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gevent.plugins.monkey.did_patch_all]\nrecord = greenq_probe_plugin:record\n"
    )


def _patch_in_child(tmp_path: Path, *paths: Path) -> tuple[dict, list[str]]:
    log = tmp_path / "plugin.log"
    env = dict(os.environ, PLUGIN_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = log.read_text().split() if log.exists() else []
    return json.loads(done.stdout.strip().splitlines()[-1]), calls


def test_a_declared_plugin_is_called_and_only_the_declaring_distributions_are_parsed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _plugin_dist(site)
    report, calls = _patch_in_child(tmp_path, site)
    assert report["patched"]
    assert calls == ["GeventDidPatchAllEvent"]  # gevent called the plugin, once
    assert report["scans"] == 0  # no full scan of every installed distribution
    names = sorted(Path(p).name.split("-")[0] for p in report["where"])
    assert names == ["gevent", "greenq_probe_plugin"]  # gevent declares plugins of its own


def test_a_zip_on_the_path_falls_back_to_one_full_scan(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _plugin_dist(site)
    archive = tmp_path / "extra.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("nothing.py", "")
    report, calls = _patch_in_child(tmp_path, archive, site)
    assert report["where"] is None  # a text search cannot see inside the zip
    assert report["scans"] == 1  # one scan for the whole patch, not one per patched module
    assert calls == ["GeventDidPatchAllEvent"]
