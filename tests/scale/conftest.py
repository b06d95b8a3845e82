"""Fixtures of the scale tests: a Sentinel group or a Redis Cluster per test, the scale app as
a producer pointed at it (tests/scale/servers.py starts and stops the servers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scale import scale_app
from tests.scale.servers import Cluster, SentinelGroup


@pytest.fixture
def sentinels() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    yield group
    group.stop()


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch, redis_url: str):
    """The scale app as a producer; ``producer(url)`` points it at a broker. COUNTER_URL is the
    suite's plain Redis (flushed), where the tasks count their runs."""
    monkeypatch.setenv("COUNTER_URL", redis_url)
    scale_app._counter.clear()

    def point(url: str):
        monkeypatch.setenv("GREENQ_BROKER_URL", url)
        scale_app.app.close()
        scale_app.app._settings = None
        return scale_app.app

    yield point
    scale_app.app.close()
    scale_app.app._settings = None


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """Three masters, no replicas."""
    found = Cluster(3).start()
    yield found
    found.stop()


@pytest.fixture
def cluster_with_replicas() -> Iterator[Cluster]:
    """Three masters, each with a replica."""
    found = Cluster(3, replicas=1).start()
    yield found
    found.stop()
