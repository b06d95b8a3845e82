"""Task events, the worker's /metrics (flow control's state included) and the queue exporter,
scraped and parsed for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from greenq import GreenQ
from greenq.embedded import free_port
from tests.apps import basic
from tests.flow.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env["GREENQ_BROKER_URL"] = url
    return env


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _cli(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "greenq", *args],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_events_are_recorded_and_filtered_by_task(app: GreenQ, redis_url: str, start_worker) -> None:
    start_worker("-c", "4", env={"GREENQ_WORKER_SEND_TASK_EVENTS": "true"})
    assert basic.add.delay(1, 1).get(timeout=10) == 2
    failed = basic.fail.delay("boom")
    failed.get(timeout=10, propagate=False)
    tail = subprocess.run(
        [
            sys.executable,
            "-m",
            "greenq",
            "events",
            "--from-start",
            "--task",
            "tests.apps.basic.fail",
            "--count",
            "3",
            "--json",
        ],
        env=_env(redis_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["event"] for e in events] == ["received", "started", "failed"]
    assert {e["id"] for e in events} == {failed.id}
    assert events[2]["error"] == "ValueError: boom" and events[2]["runtime_s"] >= 0


def test_events_are_off_by_default(app: GreenQ, r, start_worker) -> None:
    start_worker("-c", "4")
    assert basic.add.delay(1, 1).get(timeout=10) == 2
    assert r.exists("greenq:events") == 0


def test_worker_metrics_are_scraped_and_parsed(app: GreenQ, start_worker) -> None:
    port = free_port()
    start_worker("-c", "4", "--metrics-port", str(port))
    assert basic.add.delay(1, 2).get(timeout=10) == 3
    basic.fail.delay("x").get(timeout=10, propagate=False)
    families = _scrape(port)
    tasks = {(s.labels["task"], s.labels["state"]): s.value for s in families["greenq_worker_tasks"]}
    assert tasks[("tests.apps.basic.add", "SUCCESS")] == 1
    assert tasks[("tests.apps.basic.fail", "FAILURE")] == 1
    runtime = {
        s.name: s.value
        for s in families["greenq_worker_task_runtime_seconds"]
        if s.labels["task"] == "tests.apps.basic.add"
    }
    assert runtime["greenq_worker_task_runtime_seconds_count"] == 1
    for name in (
        "greenq_worker_in_flight",
        "greenq_worker_prefetch_fill",
        "greenq_worker_hub_blocks",
        "greenq_worker_reconnects",
    ):
        assert name in families


def test_exporter_serves_queue_metrics_from_redis_alone(app: GreenQ, redis_url: str) -> None:
    basic.add.map([(1, 1)] * 5, queue="scaled")
    basic.add.apply_async((1, 1), queue="scaled", countdown=600)
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "greenq", "exporter", "--port", str(port)],
        env=_env(redis_url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert exporter.stdout is not None and "serving queue metrics" in exporter.stdout.readline()
        families = _scrape(port)
        ready = {s.labels["queue"]: s.value for s in families["greenq_queue_ready"]}
        delayed = {s.labels["queue"]: s.value for s in families["greenq_queue_delayed"]}
        assert ready["scaled"] == 5 and delayed["scaled"] == 1
        assert "greenq_queue_oldest_age_seconds" in families
        assert {s.labels["queue"]: s.value for s in families["greenq_queue_paused"]}["scaled"] == 0
        _cli(redis_url, "queue", "pause", "scaled")
        paused = {s.labels["queue"]: s.value for s in _scrape(port)["greenq_queue_paused"]}
        assert paused["scaled"] == 1  # read from Redis at each scrape
    finally:
        exporter.kill()
        exporter.wait(10)


def _flow(port: int) -> dict[str, Any]:
    """The worker's flow-control metrics, by label."""
    families = _scrape(port)

    def by(name: str, label: str) -> dict[str, float]:
        return {s.labels[label]: s.value for s in families.get(name, []) if not s.name.endswith("_created")}

    return {
        "paused": by("greenq_worker_queue_paused", "queue"),
        "rates": by("greenq_worker_queue_rate_limit_per_second", "queue"),
        "leases": [s.value for s in families["greenq_worker_flow_leases"]],
        "held_back": by("greenq_worker_flow_held_back", "reason"),
        "http_hosts": by("greenq_worker_http_hosts", "state"),
    }


def test_worker_metrics_show_paused_queues_rates_leases_and_parked_messages(
    redis_url: str, r, start_worker, evidence
) -> None:
    port = free_port()
    start_worker("-c", "4", "-Q", "leased,plain", "--metrics-port", str(port), app="tests.apps.evidence")
    assert _flow(port) == {
        "paused": {"leased": 0, "plain": 0},
        "rates": {},
        "leases": [0],
        "held_back": {"deferred": 0, "parked": 0},
        "http_hosts": {"open": 0, "backoff": 0, "probe": 0, "failing": 0},
    }
    first = evidence.hold.delay("h1")
    wait_until(lambda: r.get("h1:running"), what="the first task to start")
    second = evidence.hold.delay("h2")  # concurrency_limit=1: parked behind the first
    wait_until(lambda: _flow(port)["held_back"]["parked"] == 1, what="the second message parked")
    assert _flow(port)["leases"] == [1] and not r.get("h2:running")

    _cli(redis_url, "queue", "pause", "plain")
    _cli(redis_url, "queue", "limit", "plain", "5/s")
    wait_until(lambda: _flow(port)["paused"] == {"leased": 0, "plain": 1}, what="plain shown paused")
    wait_until(lambda: _flow(port)["rates"] == {"plain": 5.0}, what="plain's rate shown")
    _cli(redis_url, "queue", "resume", "plain")
    wait_until(lambda: _flow(port)["paused"] == {"leased": 0, "plain": 0}, what="plain shown resumed")

    r.set("h1", 1)
    r.set("h2", 1)
    assert first.get(timeout=30) == "held" and second.get(timeout=30) == "held"
    wait_until(lambda: _flow(port)["leases"] == [0], what="the leases given back")
    assert _flow(port)["held_back"] == {"deferred": 0, "parked": 1}
