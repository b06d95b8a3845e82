"""The web dashboard: live queues, workers, tasks, dead letters and schedules, from Redis alone.

``greenq dashboard -A app`` serves it with gevent's WSGI server (``greenq.dashboard.server``);
``wsgi_app(app)`` returns the WSGI application to mount under a Django or Flask URL prefix.
Importing this package imports nothing else (the CLI builds its parser from ``server``).
"""

from __future__ import annotations

from typing import Any


def wsgi_app(app: Any, *, read_only: bool = False, auth: tuple[str, str] | None = None) -> Any:
    """The dashboard of ``app`` (a ``GreenQ``) as a WSGI application.

    Mount it anywhere: links follow ``SCRIPT_NAME``. ``auth`` = (user, password) asks every
    request for HTTP Basic credentials (leave it None when the host framework authenticates);
    ``read_only`` hides every action and refuses any POST. The live feed holds one request
    open per browser (server-sent events): serve it with gevent, or threads, not a single
    blocking worker.
    """
    from greenq.dashboard.app import Dashboard

    return Dashboard(app, read_only=read_only, auth=auth)
