"""Hypothesis keeps its files (example database, failure patches, caches) out of the tree, and
its failure report works under ``filterwarnings = error``."""

from __future__ import annotations

import contextlib
import tempfile
import warnings

from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="greenq-hypothesis-"))

# The failure report imports hypothesis.extra._patching, whose libcst import warns (a deprecated
# mypy_extensions.TypedDict): as an error, it turned a found example into an INTERNALERROR.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
