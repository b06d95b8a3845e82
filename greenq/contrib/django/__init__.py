"""greenq.contrib.django: what greenq needs from Django, imported only when used.

Owns the Django touch points: ``on_commit`` (``apply_async(on_commit=True)``,
``delay_on_commit``), the list of installed apps for ``app.autodiscover_tasks()`` (setting
Django up in a worker process that has not), ``close_db_connections`` for task bodies, and the
clear error when Django is missing.
Settings need nothing here: ``app.config_from_object("django.conf:settings",
namespace="GREENQ")`` reads ``GREENQ_*`` names through ``greenq.config`` like any other object,
and only those: a Django setting that raises when read (an empty ``SECRET_KEY``) is never read.

Django is the optional extra ``greenq[django]``; this module imports it lazily, inside the
functions, so importing greenq (or this module) never needs it. Imports: exceptions. Must not
import gevent, the worker or pools.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from greenq.exceptions import ConfigError

INSTALL_HINT = "pip install 'greenq[django]'"


def require(module: str, needed_by: str) -> ModuleType:
    """Import a Django module, or raise ``ConfigError`` saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{needed_by} needs Django, which is not installed: {INSTALL_HINT}") from exc


def on_commit(callback: Callable[[], Any], using: str | None = None) -> None:
    """Run ``callback`` when the transaction of database ``using`` (None: the default) commits.

    Inside ``transaction.atomic()`` the callback waits for the outermost block to commit and
    is dropped if it rolls back; in autocommit mode (no transaction open) it runs now. An
    exception from the callback propagates out of the commit, after the data is committed
    (Django's ``on_commit`` with ``robust=False``).

    Raises:
        ConfigError: Django is not installed.
    """
    transaction = require("django.db.transaction", "on_commit=True / delay_on_commit()")
    transaction.on_commit(callback, using=using)


def installed_apps() -> list[str] | None:
    """The module names of Django's installed apps, in ``INSTALLED_APPS`` order.

    Sets Django up (``django.setup()``) when nobody has yet, as in a ``greenq worker``
    process, which reads ``DJANGO_SETTINGS_MODULE``. Returns None while Django is loading its
    apps (this was called from inside ``django.setup()``): the caller tries again later.

    Raises:
        ConfigError: Django is not installed, or its settings are not configured.
    """
    django = require("django", "autodiscover_tasks() without packages")
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    if not apps.ready:
        if apps.loading:
            return None
        try:
            django.setup()
        except ImproperlyConfigured as exc:
            raise ConfigError(
                f"autodiscover_tasks(): Django is not configured ({exc}); set DJANGO_SETTINGS_MODULE "
                "before the app is used, or pass the packages: autodiscover_tasks(['shop.orders'])"
            ) from exc
    return [config.name for config in apps.get_app_configs()]


def close_db_connections(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a task body so that it closes this thread's (greenlet's) Django database
    connections when it returns or raises: ``@app.task`` above, ``@close_db_connections`` below.

    Needed with the gevent pool: each task runs in a new greenlet with its own connection, which
    is otherwise only closed when the garbage collector gets to it, so a busy worker can exhaust
    the database's ``max_connections``. With prefork or solo it costs a reconnect per task.
    """

    @functools.wraps(fn)
    def run_then_close(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            from django.db import connections

            connections.close_all()

    return run_then_close
