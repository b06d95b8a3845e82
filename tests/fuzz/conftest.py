"""Hypothesis keeps its files (example database, failure patches, caches) out of the tree."""

from __future__ import annotations

import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="greenq-hypothesis-"))
