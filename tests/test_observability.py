"""Task events, the worker's /metrics and the queue exporter, scraped and parsed for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from greenq import GreenQ
from greenq.embedded import free_port
from tests.apps import basic

ROOT = Path(__file__).resolve().parent.parent


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env["GREENQ_BROKER_URL"] = url
    return env


def _scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


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
    finally:
        exporter.kill()
        exporter.wait(10)
