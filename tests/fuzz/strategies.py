"""Hypothesis settings and strategies shared by the fuzz tests: bounded, so CI runs them in seconds."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

# Bounded (CI), no example database written into the tree, no per-example deadline (the machine
# is shared: a slow example is not a failure).
FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
QUICK = settings(FUZZ, max_examples=100)
# Examples fed to one long-lived worker: no shrinking (once the worker is broken, every smaller
# example fails too, each after a timeout); the failing example is printed as found.
WORKER = settings(FUZZ, phases=[Phase.explicit, Phase.reuse, Phase.generate])

# JSON values: the edges orjson and the envelope decoder meet (huge ints, NaN-free floats,
# unicode with surrogate-free code points, empty containers, nesting).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
queue_chars = string.ascii_letters + string.digits + "_.:@-"
valid_queue_names = st.text(alphabet=queue_chars, min_size=1, max_size=200)


def envelope(task: str, task_id: str, args: Any = (), **extra: Any) -> dict[str, Any]:
    """A valid protocol-1 envelope (docs/protocol.md)."""
    return {
        "v": 1,
        "id": task_id,
        "task": task,
        "args": list(args),
        "kwargs": {},
        "queue": "fuzz",
        "priority": 0,
        "eta": None,
        "expires": None,
        "retries": 0,
        "created": 0.0,
        **extra,
    }
