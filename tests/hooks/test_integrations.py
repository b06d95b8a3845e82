"""docs/integrations.md's examples, run as they stand (tests/hooks/integration_app.py execs them)
in a real worker: OTLP export to a local HTTP endpoint, Sentry through a local transport,
Django's stale connections closed around tasks, and a request id carried from the producer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from greenq import GreenQ

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.hooks.integration_app"


class Collector:
    """A local OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                found = [
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(),
                        "attributes": {a.key: a.value.string_value for a in span.attributes},
                    }
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with collector.cond:
                    collector.spans.extend(found)
                    collector.cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, name: str, message_id: str, timeout: float = 30.0) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [
                s
                for s in self.spans
                if s["name"] == name and s["attributes"].get("messaging.message.id") == message_id
            ]

        with self.cond:
            assert self.cond.wait_for(found, timeout), self.spans
            return found()[0]


@pytest.fixture
def collector() -> Iterator[Collector]:
    made = Collector()
    yield made
    made.server.shutdown()
    made.server.server_close()


def test_the_documented_integrations_run_as_written(
    redis_url: str, r: redis.Redis, start_worker, collector: Collector, tmp_path: Path
) -> None:
    env = {
        "HOOKS_DB": str(tmp_path / "db.sqlite3"),
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    worker = start_worker("-P", "solo", app=APP, env=env)
    # The producer: a web process with a request id and its own tracer provider (the doc's).
    code = (
        "import json; from opentelemetry import trace; from tests.hooks import integration_app as m; "
        "m.export_traces(); m.request_id.set('req-42'); "
        "ids = [m.current_request_id.delay().id, m.fails.delay(3).id]; "
        "trace.get_tracer_provider().shutdown(); print(json.dumps(ids))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env, "GREENQ_BROKER_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    request_task, failing = json.loads(done.stdout.strip().splitlines()[-1])
    app = GreenQ("probe", broker=redis_url)
    # request id: restored around the run, and on the task's log records
    assert app.AsyncResult(request_task).get(timeout=30) == ["req-42", "req-42"]
    # Sentry: one event for the failure, tagged with the task, through the local transport
    assert app.AsyncResult(failing).get(timeout=30, propagate=False) is not None
    events = []
    for raw in r.lrange("sentry", 0, -1):
        for line in raw.splitlines():
            item = json.loads(line)
            if "exception" in item:
                events.append(item)
    (event,) = events
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert event["exception"]["values"][-1]["value"] == "broken 3"
    assert event["tags"] == {"greenq.task": "tests.hooks.integration_app.fails", "greenq.task_id": failing}
    assert event["contexts"]["greenq"] == {"args": [3], "kwargs": {}, "retries": 0}
    # Django: the connection the first task opened is closed before the second starts
    probe = "tests.hooks.integration_app.db_probe"
    assert app.send_task(probe).get(timeout=30) is True
    assert app.send_task(probe).get(timeout=30) is True, "the connection was left open between tasks"
    # OTLP: the producer's span and the worker's, in one trace, exported over HTTP
    sent = collector.wait_for("send tests.hooks.integration_app.fails", failing)
    ran = collector.wait_for("process tests.hooks.integration_app.fails", failing)
    assert ran["trace_id"] == sent["trace_id"] and ran["parent_id"] == sent["span_id"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
