"""Keyed concurrency limits: never exceeded across workers (the target counts requests in
progress per host), and a SIGKILLed worker's leases free themselves."""

from __future__ import annotations

import signal
from typing import Any

import redis

from tests.flow.conftest import wait_until

FLOW_APP = "tests.flow.flow_app"


def test_keyed_concurrency_is_never_exceeded_and_a_killed_workers_slots_come_back(
    start_worker: Any, flow: Any, r: redis.Redis, http_target: Any
) -> None:
    target = http_target("--hosts", "2")
    env = {"GREENQ_WORKER_LOST_TIMEOUT": "3", "FLOW_TARGET_PORT": str(target.port)}
    first = start_worker("-c", "20", "-Q", "crawl", app=FLOW_APP, env=env)
    urls = [flow.target(host, "hold/1500") for host in (1, 2) for _ in range(5)]
    results = flow.fetch.map([(url,) for url in urls])
    wait_until(lambda: all(target.host(h).get("active") == 2 for h in (1, 2)), what="2 requests per host")
    assert r.llen("greenq:{q:crawl}:parked:tests.flow.flow_app.fetch|127.0.0.1") == 3
    first.signal(signal.SIGKILL)
    first.wait()
    start_worker("-c", "20", "-Q", "crawl", app=FLOW_APP, env=env)
    assert [result.get(timeout=60) for result in results] == [200] * 10
    for host in (1, 2):
        seen = target.host(host)
        assert seen["most"] == 2, seen  # 5 tasks per host, 20 slots per worker: only leases held them back
        assert seen["answered"] >= 5
