"""The dashboard on Redis Cluster: a real ``greenq dashboard`` process pointed at three masters,
two real workers sending task events (``-E``), read over HTTP (no browser: the pages are the
same as on one Redis, tests/dashboard drives them in Chromium). The overview and its JSON show
every queue and both workers (their heartbeats are in different slots), a task page its result
and timeline, a queue page its waiting messages, the live feed ticks, a dead letter is requeued
and runs, and a purge empties a queue."""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.dashboard.conftest import DashboardProcess
from tests.scale.servers import Cluster, until

APP = "tests.scale.cluster_dash_app"
QUEUES = ["d0", "d1", "d2", "d3"]


class Dashboard(DashboardProcess):
    """The suite's ``greenq dashboard`` subprocess on this module's app and a free port, with an
    HTTP client keeping its cookies (the CSRF token's session)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "--port", "0", app=APP)
        self.http = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def get(self, path: str) -> str:
        with self.http.open(self.base + path, timeout=30) as response:
            assert response.status == 200, path
            return str(response.read().decode())

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.http.open(self.base + path, data=data, timeout=30) as response:
                return response.status, response.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "") or exc.read().decode()

    def overview(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/api/overview")))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:  # the 303 after an action is checked as it is
        return None


@pytest.fixture
def stack(
    cluster: Cluster, redis_url: str, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Dashboard, Any, Callable[[], list[Any]]]]:
    monkeypatch.setenv("GREENQ_BROKER_URL", cluster.url)
    monkeypatch.setenv("COUNTER_URL", redis_url)
    from tests.scale import cluster_dash_app

    cluster_dash_app.app.close()
    cluster_dash_app.app._settings = None
    args = ("-c", "10", "-E", "-Q", ",".join(QUEUES))
    workers = [
        start_worker(*args, app=APP, url=cluster.url, env={"COUNTER_URL": redis_url}) for _ in range(2)
    ]
    dashboard = Dashboard(cluster.url)
    yield dashboard, cluster_dash_app, lambda: workers
    dashboard.stop()
    cluster_dash_app.app.close()
    cluster_dash_app.app._settings = None


def test_dashboard_on_a_cluster_overview_task_queue_feed_dead_letter_requeue_and_purge(
    cluster: Cluster, stack: tuple[Dashboard, Any, Callable[[], list[Any]]], r: redis.Redis
) -> None:
    dash, tasks, _ = stack
    done = [tasks.work.apply_async((i,), queue=QUEUES[i % 4]) for i in range(40)]
    assert [x.get(timeout=30) for x in done] == list(range(40))
    failing = tasks.flaky.apply_async(("cl",), queue="d1")
    parked = [tasks.parked.apply_async((f"p{i}",), queue="parked") for i in range(3)]

    def ready() -> dict[str, Any] | None:
        seen = dash.overview()
        rows = {q["name"]: q for q in seen["queues"]}
        processed = sum(int(w["processed"]) for w in seen["workers"])  # as of their last heartbeat
        if len(seen["workers"]) == 2 and rows.get("d1", {}).get("dead") == 1 and processed >= 41:
            return seen
        return None

    seen = until(ready, 30, "both workers, what they ran and the dead letter on the overview")
    rows = {q["name"]: q for q in seen["queues"]}
    assert set(rows) == {*QUEUES, "parked"}
    assert rows["parked"]["waiting"] == 3 and rows["parked"]["consumers"] == 0
    assert all(rows[q]["consumers"] == 2 and rows[q]["waiting"] == 0 for q in QUEUES)
    page = dash.get("/")
    assert "<h1>Overview</h1>" in page and all(f"/queues/{q}" in page for q in QUEUES)
    assert all(html.escape(str(w["name"])) in page for w in seen["workers"])
    # A task: its result and its timeline from the events (workers run with -E)
    task = dash.get(f"/tasks/{done[5].id}")
    assert "SUCCESS" in task and "tests.scale.cluster_dash_app.work" in task and "succeeded" in task
    queue = dash.get("/queues/parked")
    assert all(f"p{i}" in queue for i in range(3))
    # The live feed: a tick with the counts of every queue
    with dash.http.open(dash.base + "/events", timeout=30) as feed:
        event = b""
        for line in feed:
            if line.startswith(b"event: "):
                event = line[7:].strip()
            elif event == b"tick" and line.startswith(b"data: "):
                tick = json.loads(line[6:])
                if "queues" in tick:  # a tick whose counts were read
                    break
    assert {q["name"] for q in tick["queues"]} == {*QUEUES, "parked"}
    assert len(tick["workers"]) == 2
    # The dead letter: requeued from its page once the task is fixed, then it runs
    dead = dash.get("/dead?queue=d1")
    entry = re.search(r'name="one" value="(\d+-\d+)"', dead)
    csrf = re.search(r'name="csrf" value="([^"]+)"', dead)
    assert entry and csrf and failing.id in dead
    r.set("fixed:cl", 1)
    status, where = dash.post("/dead/requeue", {"csrf": csrf.group(1), "queue": "d1", "one": entry.group(1)})
    assert status == 303 and "done=" in where
    until(lambda: r.get("ran:cl"), 30, "the requeued task to run")
    until(lambda: tasks.app.AsyncResult(failing.id).state == "SUCCESS", 30, "its result")
    assert tasks.app.AsyncResult(failing.id).result == "fixed cl" and int(r.get("ran:cl") or 0) == 1
    assert "fixed cl" in dash.get(f"/tasks/{failing.id}")
    until(lambda: {q["name"]: q for q in dash.overview()["queues"]}["d1"]["dead"] == 0, 30, "no dead letter")
    # A purge, confirmed: the parked messages go
    status, _ = dash.post("/queues/parked/purge", {"csrf": csrf.group(1), "confirmed": "1"})
    assert status == 303
    assert {q["name"]: q for q in dash.overview()["queues"]}["parked"]["waiting"] == 0
    assert all(x.state == "PENDING" for x in parked)
    assert "Traceback" not in dash.output, dash.output[-3000:]
