"""Each greenq role under exactly the ACL rule ``greenq acl`` prints, on a real Redis 6.2 (the
oldest greenq supports): a worker process, a producer and the operator commands do their whole
job, Redis refuses nothing else, and what a role lacks fails in one line naming the permission."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from greenq import GreenQ
from greenq.acl import ROLES
from greenq.canvas import group
from greenq.cli import main
from greenq.embedded import RedisServer
from tests.security import secapp
from tests.security.conftest import ROOT, SECRET, apply_rule, clean_env, user_url


@pytest.fixture
def roles(acl_server: RedisServer) -> dict[str, str]:
    """Role -> broker URL of its ACL user (made from ``greenq acl`` output, as printed)."""
    admin = redis.Redis.from_url(acl_server.url)
    return {role: user_url(acl_server, apply_rule(admin, role)) for role in ROLES}


@pytest.fixture
def as_role(monkeypatch: pytest.MonkeyPatch, roles: dict[str, str]) -> Iterator[Any]:
    """``as_role("producer")``: this process's secapp app (and in-process ``greenq`` commands)
    now connect as that role's user."""

    def switch(role: str) -> GreenQ:
        monkeypatch.setenv("GREENQ_BROKER_URL", roles[role])
        secapp.app.close()
        secapp.app._settings = None
        return secapp.app

    yield switch
    secapp.app.close()
    secapp.app._settings = None


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """An operator command in this process (the CLI's own code, without a process start)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_each_role_does_its_whole_job_under_exactly_its_printed_rule(
    acl_server: RedisServer, roles: dict[str, str], as_role: Any, start_worker: Any, capsys: Any
) -> None:
    limits = {"GREENQ_QUEUE_RATE_LIMITS": '{"limited": "50/s"}'}  # flow control's scripts and keys too
    worker = start_worker(
        "-c", "4", "-E", "-Q", "default,limited", app="tests.security.secapp", url=roles["worker"], env=limits
    )
    app = as_role("producer")
    assert secapp.add.delay(1, 2).get(timeout=20) == 3
    assert secapp.add_late.delay(2, 2).get(timeout=20) == 4
    assert secapp.add.apply_async((3, 3), queue="limited").get(timeout=20) == 6
    assert secapp.retry_once.delay("kept").get(timeout=20) == "kept"  # the delayed set, moved by the worker
    first = secapp.add.apply_async((5, 5), task_id="only-once", unique=True)
    assert secapp.add.apply_async((6, 6), task_id="only-once", unique=True).id == "only-once"
    assert first.get(timeout=20) == 10
    with pytest.raises(Exception, match="no luck"):
        secapp.fail.delay("no luck").get(timeout=20)
    assert group(secapp.add.s(1, 1), secapp.add.s(2, 2)).apply_async().get(timeout=20) == [2, 4]
    later = secapp.add.apply_async((7, 7), countdown=0.3)
    app.control.revoke(later.id)
    later.get(timeout=20, propagate=False)
    assert later.state == "REVOKED"
    gone = secapp.add.delay(8, 8)
    assert gone.get(timeout=20) == 16
    gone.forget()
    assert gone.state == "PENDING"
    app.send_task("no.such.task")
    worker.wait_for("dead-lettering")
    secapp.add.apply_async((1, 1), queue="scratch")  # a queue nobody reads, for purge and forget

    as_role("operator")
    code, out, err = run(capsys, "status")
    assert code == 0 and "scratch" in out and f"{worker.pid}" in out, err
    assert run(capsys, "dead", "list")[1].count('"reason": "unknown task') == 1
    assert "requeued 1 dead letters" in run(capsys, "dead", "requeue", "default")[1]
    worker.wait_for("dead-lettering", count=2)
    assert "purged 1 messages from scratch" in run(capsys, "purge", "scratch", "--yes")[1]
    assert run(capsys, "queue", "forget", "scratch")[1] == "forgot queue scratch\n"
    assert '"state": "SUCCESS"' in run(capsys, "result", first.id)[1]
    code, out, err = run(capsys, "events", "--from-start", "--count", "2")
    assert code == 0 and " received " in out, err
    assert run(capsys, "inspect", "active")[0] == 0
    assert run(capsys, "queue", "pause", "limited")[0] == run(capsys, "queue", "resume", "limited")[0] == 0
    # The worker is told of changes to its delayed sets (CLIENT TRACKING to a subscriber of
    # __redis__:invalidate, both allowed by the rule), not left polling them.
    users = [c for c in redis.Redis.from_url(acl_server.url).client_list() if c["user"] == "greenq-worker"]
    assert any("t" in c["flags"] for c in users) and any("P" in c["flags"] for c in users), users
    # Redis refused nothing but redis-py's CLIENT SETINFO greeting (it ignores the refusal).
    refused = redis.Redis.from_url(acl_server.url).acl_log()
    assert {entry["object"] for entry in refused} <= {"client"}, refused
    assert "Traceback" not in worker.output and "permission" not in worker.output


def test_what_a_role_lacks_fails_in_one_line_naming_the_permission(
    roles: dict[str, str], as_role: Any, capsys: Any
) -> None:
    as_role("producer")
    for command in (["status"], ["purge", "default", "--yes"], ["dead", "list"]):
        code, out, err = run(capsys, *command)
        assert code == 1 and out == "" and err.count("\n") == 1, err
        assert err.startswith("greenq: error: broker redis://greenq-producer:***@127.0.0.1:"), err
        assert "no permissions to run the '" in err and SECRET not in err
    secapp.add.delay(1, 1)  # the producer may enqueue: "default" is now a known queue
    as_role("worker")
    code, _, err = run(capsys, "purge", "default", "--yes")
    assert code == 1 and "no permissions to run the 'xlen' command" in err, err
    # A worker started with the producer's user stops at its first heartbeat, in one line.
    wrong = subprocess.run(
        [sys.executable, "-m", "greenq", "worker", "-A", "tests.security.secapp", "-c", "2"],
        env=clean_env(GREENQ_BROKER_URL=roles["producer"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    [line] = [line for line in wrong.stderr.splitlines() if "error" in line]
    assert line.startswith("greenq: error: broker redis://greenq-producer:***@")
    assert "permission denied by the Redis ACL: this user has no permissions" in line
    assert "greenq acl --role" in line and SECRET not in wrong.stderr
