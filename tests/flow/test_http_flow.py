"""greenq.http's flow control against a real HTTP target: Retry-After held by every greenlet
of a worker, retry_on_429, the circuit breaker, and the task's deadline as default timeout."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from greenq import http

FLOW_APP = "tests.flow.flow_app"


def test_retry_after_holds_500_greenlets_to_one_probe(start_worker: Any, flow: Any, http_target: Any) -> None:
    target = http_target("--hosts", "1")
    start_worker("-c", "500", "-Q", "polite", app=FLOW_APP, env={"FLOW_TARGET_PORT": str(target.port)})
    url = flow.target(1, "backoff/3")
    assert flow.polite.delay(url).get(timeout=20) == 429  # opens the target's 3-s window
    results = flow.polite.map([(url,)] * 500)
    assert [result.get(timeout=60) for result in results] == [200] * 500
    seen = target.host(1)
    assert seen["in_window"] <= 1, seen  # the worker held all 500 until the window was over
    assert seen["after_window"] == 500


def test_retry_on_429_retries_the_task_with_the_servers_countdown(
    start_worker: Any, flow: Any, http_target: Any
) -> None:
    target = http_target("--hosts", "2")
    start_worker("-c", "10", "-Q", "polite", app=FLOW_APP, env={"FLOW_TARGET_PORT": str(target.port)})
    result = flow.polite_retry.delay(flow.target(2, "backoff/2"))
    assert result.get(timeout=30) == 200
    seen = target.host(2)
    assert seen["in_window"] == 0 and seen["after_window"] == 1, seen


def test_a_failing_host_opens_its_circuit_then_one_probe_goes(http_target: Any) -> None:
    target = http_target("--hosts", "1")
    client = http.Client(pool_size=4, circuit_failures=3, circuit_open_s=0.5)
    url = f"http://127.0.0.1:{target.port}/fail"
    assert [client.get(url).status_code for _ in range(3)] == [503] * 3
    with pytest.raises(http.CircuitOpen):
        client.get(url)
    assert target.host(1)["failed"] == 3  # refused without a request
    assert client.hosts.states() == {f"127.0.0.1:{target.port}": "open"}
    time.sleep(0.6)  # the circuit's own time (what is tested), not a wait for another party
    assert client.get(url).status_code == 503  # the probe
    with pytest.raises(http.CircuitOpen):  # it failed: open again at once
        client.get(url)
    assert target.host(1)["failed"] == 4
    client.close()


def test_retry_after_as_seconds_or_http_date() -> None:
    clock = time.time()
    assert http.retry_after_s("7") == 7.0
    assert 9 <= (http.retry_after_s(email.utils.formatdate(clock + 10, usegmt=True), clock) or 0) <= 10
    assert http.retry_after_s("soon") is None and http.retry_after_s(None) is None
    assert http.retry_after_s("999999") == http.RETRY_AFTER_MAX_S


@pytest.mark.parametrize("pool", ["gevent", "prefork"])
def test_the_tasks_remaining_time_is_the_default_timeout(
    start_worker: Any, flow: Any, http_target: Any, pool: str
) -> None:
    target = http_target("--hosts", "1")
    env = {"FLOW_TARGET_PORT": str(target.port)}
    start_worker("--pool", pool, "-c", "4", "-Q", "polite", app=FLOW_APP, env=env)
    slow = flow.bounded.apply_async((flow.target(1, "hold/20000"),), expires=2)
    blocked = flow.bounded_redis.apply_async(expires=2)
    assert slow.get(timeout=15) == "deadline"  # not 30 s (the client's default), nor 20 s
    assert blocked.get(timeout=15) == "deadline"
