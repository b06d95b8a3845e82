"""Every signal and every task-class handler, in a gevent worker, a prefork worker and a hybrid
worker's child process; raising receivers and handlers leave outcomes alone; one trace links
the producer's span and the worker's.

One scenario per pool (``tests/hooks/hook_app.py`` records what each receiver and handler got):
the producer (a subprocess) sends a task that succeeds, one that fails, one that retries once,
one revoked before it starts, one already expired and one the worker does not know; the worker
runs them and is stopped with SIGTERM. Each check below fails if its hook was not called, or
was called with other arguments.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from greenq import GreenQ
from tests.conftest import WorkerProcess
from tests.hooks.producer import run_producer

APP = "tests.hooks.hook_app"
# pool -> (worker flags, task-name suffix: the hybrid worker's tasks are cpu=True)
POOLS = {
    "gevent": (["-P", "gevent", "-c", "10"], ""),
    "prefork": (["-P", "prefork", "-c", "2"], ""),
    "hybrid": (["-P", "gevent", "-c", "10", "--cpu-workers", "1"], "_cpu"),
}


def evidence(r: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(f"ev:{name}", 0, -1)]


def produce(redis_url: str, suffix: str) -> tuple[dict[str, str], int]:
    """Send the scenario from another process (the producer's signals and span live there)."""
    code = (
        "import json, os; from tests.hooks import hook_app; "
        f"print(os.getpid()); print(json.dumps(hook_app.produce({suffix!r})))"
    )
    pid, ids = run_producer(redis_url, code)[-2:]
    return json.loads(ids), int(pid)


@dataclass
class Scenario:
    pool: str
    suffix: str
    worker: WorkerProcess
    ids: dict[str, str]
    producer_pid: int
    results: dict[str, Any]
    r: redis.Redis

    def one(self, name: str, role: str, **match: Any) -> dict[str, Any]:
        """The single entry of hook ``name`` for the task of ``role`` (matching ``match``)."""
        task_id = self.ids[role]
        found = [
            e
            for e in evidence(self.r, name)
            if task_id in (e.get("task_id"), (e.get("headers") or {}).get("id"))
            and all(e.get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, f"{self.pool}: {name} for {role} {match}: {found or evidence(self.r, name)}"
        return found[0]

    def name(self, base: str) -> str:
        return f"hooks.{base}{self.suffix}"


@pytest.fixture(params=sorted(POOLS))
def scenario(request: pytest.FixtureRequest, redis_url: str, r: redis.Redis, start_worker) -> Scenario:
    flags, suffix = POOLS[request.param]
    worker = start_worker(*flags, app=APP)
    ids, producer_pid = produce(redis_url, suffix)
    app = GreenQ("probe", broker=redis_url)
    results = {}
    for role, task_id in ids.items():
        result = app.AsyncResult(task_id)
        result.get(timeout=60, propagate=False)
        results[role] = (result.state, result.info)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.output[-3000:]
    return Scenario(request.param, suffix, worker, ids, producer_pid, results, r)


def check_outcomes(sc: Scenario) -> None:
    """Raising receivers and handlers (hook_app connects one on every signal) change nothing."""
    states = {role: state for role, (state, _) in sc.results.items()}
    assert states == {
        "add": "SUCCESS",
        "boom": "FAILURE",
        "flaky": "SUCCESS",
        "revoked": "REVOKED",
        "expired": "REVOKED",
        "unknown": "FAILURE",
        "next": "SUCCESS",
    }, sc.results
    assert sc.results["add"][1]["result"] == 5
    assert sc.results["boom"][1]["exc_type"] == "ValueError"
    assert "receiver boom on task_prerun" in sc.worker.output
    assert "before_start raised (ignored)" in sc.worker.output


def check_publish(sc: Scenario) -> None:
    before = sc.one("before_task_publish", "add")
    assert before["sender"] == sc.name("add") and before["routing_key"] == "default"
    assert before["body"] == [[2, 3], {}, {}]
    assert before["headers"]["task"] == sc.name("add") and before["headers"]["retries"] == 0
    assert before["headers"]["traceparent"].startswith("00-")
    assert before["extra"] == ["declare", "properties", "retry_policy", "signal"]
    assert before["pid"] == sc.producer_pid
    after = sc.one("after_task_publish", "add")
    assert after["sender"] == sc.name("add") and after["body"] == [[2, 3], {}, {}]
    assert after["routing_key"] == "default" and after["extra"] == ["signal"]
    # one per task sent, and one more for flaky's retry: written, and so published, by the worker
    assert len(evidence(sc.r, "after_task_publish")) == len(sc.ids) + 1
    flaky = [e for e in evidence(sc.r, "after_task_publish") if e["headers"]["id"] == sc.ids["flaky"]]
    assert [(e["headers"]["retries"], e["pid"]) for e in flaky] == [(0, sc.producer_pid), (1, sc.worker.pid)]
    assert flaky[1]["headers"]["request_id"] == f"req-{sc.ids['flaky']}"  # the retry keeps its headers
    # before_task_publish added a header: the worker's task sees it as request.request_id
    assert sc.results["flaky"][1]["result"][2] == f"req-{sc.ids['flaky']}"


def check_task_signals(sc: Scenario) -> int:
    """Returns the pid that ran the tasks."""
    add = sc.name("add")
    prerun = sc.one("task_prerun", "add")
    assert prerun == {**prerun, "sender": add, "task": add, "args": [2, 3], "kwargs": {}}
    postrun = sc.one("task_postrun", "add")
    assert postrun == {**postrun, "sender": add, "task": add, "args": [2, 3], "retval": 5, "state": "SUCCESS"}
    assert sc.one("task_postrun", "boom")["state"] == "FAILURE"
    assert sc.one("task_postrun", "flaky", state="RETRY")["retval"].startswith("Retry(")
    assert sc.one("task_success", "add") == {**sc.one("task_success", "add"), "sender": add, "result": 5}
    failure = sc.one("task_failure", "boom")
    assert failure == {
        **failure,
        "sender": sc.name("boom"),
        "exception": "ValueError: boom 7",
        "args": [7],
        "kwargs": {},
        "traceback": "traceback",
        "einfo": "ValueError",
        "einfo_text": True,
    }
    retry = sc.one("task_retry", "flaky")
    assert retry == {
        **retry,
        "sender": sc.name("flaky"),
        "retries": 0,
        "reason": "Retry",
        "exc": "KeyError: 't'",
        "einfo": "Retry",
    }
    revoked = sc.one("task_revoked", "revoked")
    assert revoked == {**revoked, "sender": add, "task": add, "terminated": False, "expired": False}
    expired = sc.one("task_revoked", "expired")
    assert expired == {**expired, "task": add, "terminated": False, "expired": True}
    (rejected,) = evidence(sc.r, "task_rejected")
    assert rejected["sender"] == "Consumer" and "hooks.nope" in rejected["body"]
    assert rejected["exc"] == "unknown task 'hooks.nope'"
    return int(prerun["pid"])


def check_handlers(sc: Scenario) -> None:
    add, flaky_id = sc.name("add"), sc.ids["flaky"]
    start = sc.one("before_start", "add")
    assert start == {**start, "task": add, "args": [2, 3], "kwargs": {}}
    success = sc.one("on_success", "add")
    assert success == {**success, "task": add, "retval": 5, "args": [2, 3], "kwargs": {}}
    assert sc.one("on_success", "flaky")["retval"][:2] == ["t", 1]
    failure = sc.one("on_failure", "boom")
    assert failure == {
        **failure,
        "exc": "ValueError: boom 7",
        "args": [7],
        "kwargs": {},
        "einfo": "ValueError",
    }
    retry = sc.one("on_retry", "flaky")
    assert retry == {**retry, "task_id": flaky_id, "exc": "KeyError: 't'", "args": ["t"], "einfo": "Retry"}
    done = sc.one("after_return", "add")
    assert done == {**done, "status": "SUCCESS", "retval": 5, "args": [2, 3], "einfo": None}
    failed = sc.one("after_return", "boom")
    assert failed == {**failed, "status": "FAILURE", "retval": "ValueError", "einfo": "ValueError"}
    assert sc.one("after_return", "flaky", status="RETRY")["retval"] == "Retry"
    assert sc.one("after_return", "flaky", status="SUCCESS")["einfo"] is None


def check_worker_signals(sc: Scenario, task_pid: int) -> None:
    for name in ("worker_init", "worker_ready", "worker_shutdown"):
        (entry,) = evidence(sc.r, name)
        assert entry["pid"] == sc.worker.pid and entry["sender"] == "Consumer" and entry["consumer"], name
    beats = evidence(sc.r, "heartbeat_sent")
    assert beats and {b["pid"] for b in beats} == {sc.worker.pid}
    children = evidence(sc.r, "worker_process_init")
    if sc.pool == "gevent":
        assert children == [] and task_pid == sc.worker.pid
    else:  # every child sends it once, in the child, with no sender (as Celery's)
        assert task_pid != sc.worker.pid
        assert task_pid in {c["pid"] for c in children}
        assert all(c["sender"] == "NoneType" for c in children)
        assert sc.worker.pid not in {c["pid"] for c in children}


def check_trace(sc: Scenario, task_pid: int) -> None:
    """The producer's span and the worker's share one trace; the retry's run is in it too."""
    spans = [json.loads(raw) for raw in sc.r.lrange("spans", 0, -1)]

    def of(role: str, kind: str) -> list[dict[str, Any]]:
        return [
            s
            for s in spans
            if s["kind"] == kind and s["attributes"].get("messaging.message.id") == sc.ids[role]
        ]

    (sent,) = of("add", "PRODUCER")
    (ran,) = of("add", "CONSUMER")
    assert sent["pid"] == sc.producer_pid and ran["pid"] == task_pid
    assert ran["trace_id"] == sent["trace_id"] and ran["parent_id"] == sent["span_id"]
    assert sent["name"] == f"send {sc.name('add')}" and ran["name"] == f"process {sc.name('add')}"
    assert ran["attributes"] == {
        **ran["attributes"],
        "messaging.system": "greenq",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "greenq.task.state": "SUCCESS",
    }
    assert sent["attributes"]["messaging.operation.type"] == "send"
    (flaky_sent,) = of("flaky", "PRODUCER")
    runs = of("flaky", "CONSUMER")
    assert [r["attributes"]["greenq.task.state"] for r in runs] == ["RETRY", "SUCCESS"]
    assert {r["trace_id"] for r in runs} == {flaky_sent["trace_id"]}
    (failed,) = of("boom", "CONSUMER")
    assert failed["status"] == "ERROR"
    # a next step built with its parent's headers (as a chain's is) joins the parent's trace
    sc.ids["parent"] = sc.r.get("next_parent").decode()
    (parent,) = of("parent", "PRODUCER")
    (step_sent,) = of("next", "PRODUCER")
    (step_ran,) = of("next", "CONSUMER")
    assert step_sent["parent_id"] == parent["span_id"] and step_ran["parent_id"] == step_sent["span_id"]
    assert step_ran["trace_id"] == step_sent["trace_id"] == parent["trace_id"]
    assert sc.results["next"][1]["result"] == 10


def test_every_hook_with_its_arguments(scenario: Scenario) -> None:
    check_outcomes(scenario)
    check_publish(scenario)
    task_pid = check_task_signals(scenario)
    check_handlers(scenario)
    check_worker_signals(scenario, task_pid)
    check_trace(scenario, task_pid)
