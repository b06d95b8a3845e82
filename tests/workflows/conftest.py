"""The canvas test app (tests/apps/canvas_app.py) as a producer pointed at this test's Redis,
and workers that load it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

APP = "tests.apps.canvas_app"


@pytest.fixture
def capp(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from tests.apps import canvas_app

    monkeypatch.setenv("GREENQ_BROKER_URL", redis_url)
    canvas_app.app.close()
    canvas_app.app._settings = None
    canvas_app._client = None
    yield canvas_app.app
    canvas_app.app.close()
    canvas_app.app._settings = None


@pytest.fixture
def worker(start_worker: Callable[..., Any]) -> Callable[..., Any]:
    """``worker("-c", "8")``: a worker on the canvas app."""

    def start(*args: str, **kwargs: Any) -> Any:
        return start_worker(*args, app=APP, **kwargs)

    return start
