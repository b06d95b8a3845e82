"""Reading settings from a mapping, a module or an object (``GreenQ.config_from_object``).

Only the names that may be settings are read (a lazy settings object may raise on others), and
each must be a known setting (``greenq.config.check_name``). Imports: config.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from greenq.config import check_name


def _candidate_attributes(obj: Any, prefix: str | None) -> dict[str, Any]:
    """The attributes that may be settings, read by name after filtering: a settings object may
    raise on an unrelated attribute (Django's lazy settings do for an empty ``SECRET_KEY``)."""
    if isinstance(obj, Mapping):
        return {key: value for key, value in obj.items() if prefix is None or key.startswith(prefix)}
    if prefix is not None:
        names = [name for name in dir(obj) if name.startswith(prefix)]
    else:  # UPPERCASE attributes are constants, never settings: not even read
        names = [name for name in dir(obj) if not name.startswith("_") and name == name.lower()]
    return {name: getattr(obj, name) for name in names}


def _is_setting_like(value: Any) -> bool:
    """Modules, functions and classes in a config module are helpers, not settings."""
    return not (inspect.ismodule(value) or inspect.isroutine(value) or inspect.isclass(value))


def settings_from_object(obj: Any, namespace: str | None = None) -> dict[str, Any]:
    """Read settings from a mapping, module or object.

    With ``namespace="GREENQ"`` only attributes named ``GREENQ_<SETTING>`` are read (the Django
    convention) and each must be a known setting; no other attribute is even touched, so a lazy
    settings object that raises on one of its own settings does not break greenq. Without a
    namespace, every public lowercase attribute that is not a module, function or class must be
    a known setting; UPPERCASE attributes are constants and are not read. Mapping keys must all
    be settings (with a namespace, only the prefixed keys are looked at).
    """
    prefix = namespace.rstrip("_") + "_" if namespace else None
    found: dict[str, Any] = {}
    label = getattr(obj, "__name__", type(obj).__name__)
    for key, value in _candidate_attributes(obj, prefix).items():
        if prefix is not None:
            name = key[len(prefix) :].lower()
        elif isinstance(obj, Mapping) or _is_setting_like(value):
            name = key
        else:
            continue
        check_name(name, f"config {label}:{key}")
        found[name] = value
    return found
