"""``greenq send`` and ``greenq result`` against a real worker; clear one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenq.broker.keys import Keys

ROOT = Path(__file__).resolve().parent.parent


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env["GREENQ_BROKER_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_send_waits_for_the_result_and_result_shows_it(redis_url: str, start_worker) -> None:
    start_worker("-c", "4")
    sent = _cli(redis_url, "send", "tests.apps.basic.add", "[2, 3]", "--wait", "20")
    assert sent.returncode == 0, sent.stderr
    task_id, value = sent.stdout.split()
    assert value == "5"
    shown = _cli(redis_url, "result", task_id)
    record = json.loads(shown.stdout)
    assert record["state"] == "SUCCESS" and record["result"] == 5 and record["id"] == task_id


def test_malformed_json_arguments_are_one_line(redis_url: str) -> None:
    proc = _cli(redis_url, "send", "tests.apps.basic.add", "[2, ")
    assert proc.returncode == 1
    assert proc.stderr.startswith("greenq: error: arguments are not valid JSON")
    assert "Traceback" not in proc.stderr


def test_unreachable_broker_is_one_line_with_masked_password() -> None:
    proc = _cli("redis://me:secret@127.0.0.1:1/0", "send", "x.y", "[]")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr
    assert "me:***@127.0.0.1:1" in proc.stderr


# ---- issue 26: unknown task names, exit codes, one-line errors, validated flags, --version ----


def test_send_with_an_app_refuses_an_unknown_task_before_enqueueing(redis_url: str, r) -> None:
    from greenq.cli import check_registered
    from greenq.exceptions import NotRegistered
    from tests.apps import basic

    with pytest.raises(NotRegistered, match=r"did you mean 'tests\.apps\.basic\.add'"):
        check_registered(basic.app, "tests.apps.basic.ad")
    proc = _cli(redis_url, "send", "-A", "tests.apps.basic", "tests.apps.basic.ad", "[1, 2]")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "greenq: error: unknown task 'tests.apps.basic.ad' for app 'tests'; "
        "did you mean 'tests.apps.basic.add'?\n"
    )
    assert r.keys("greenq:*") == []  # nothing enqueued, no queue registered
    # Without -A the name cannot be checked (another app may know it): it is sent as before.
    sent = _cli(redis_url, "send", "tests.apps.basic.ad", "[1, 2]")
    assert sent.returncode == 0 and r.xlen(Keys.stream("default")) == 1


def test_send_wait_exits_non_zero_when_the_task_fails_times_out_or_is_revoked(
    redis_url: str, start_worker
) -> None:
    start_worker("-c", "4")
    failed = _cli(redis_url, "send", "tests.apps.basic.fail", '["boom"]', "--wait", "20")
    assert failed.returncode == 1, failed.stdout
    assert failed.stderr.strip().endswith("failed: ValueError: boom") and "Traceback" not in failed.stderr
    late = _cli(redis_url, "send", "tests.apps.basic.sleepy", "[3]", "--wait", "0.3")
    assert late.returncode == 1 and "not ready after 0.3s" in late.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    command = ["send", "tests.apps.basic.add", "[1, 1]", "--countdown", "2", "--wait", "30"]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "greenq", *command],
        env={**env, "GREENQ_BROKER_URL": redis_url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    task_id = waiting.stdout.readline().strip()  # printed (and flushed) before it waits
    revoked = _cli(redis_url, "revoke", task_id)
    assert revoked.returncode == 0 and "will be skipped (REVOKED)" in revoked.stdout
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1 and f"task {task_id}" in err and "TaskRevoked" in err


def test_usage_and_loading_errors_are_one_line_without_traceback(redis_url: str) -> None:
    missing = _cli(redis_url, "send")
    assert missing.returncode == 2
    assert missing.stderr == (
        "greenq send: error: the following arguments are required: task; see greenq send --help\n"
    )
    attribute = _cli(redis_url, "send", "-A", "tests.apps.basic:nope", "x")
    assert attribute.returncode == 1
    assert (
        attribute.stderr
        == "greenq: error: module 'tests.apps.basic' has no attribute 'nope'; apps there: app\n"
    )
    for bad in ("redis//oops", "http://host:6379/0", "redis://"):
        url = _cli(redis_url, "send", "-b", bad, "x", "[]")
        assert url.returncode == 1 and url.stderr.startswith(f"greenq: error: malformed broker URL '{bad}'")
        assert url.stderr.count("\n") == 1


def test_a_closed_pipe_ends_the_output_quietly(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenq", "config"],
        env={**env, "GREENQ_BROKER_URL": redis_url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written: like `| head -0`
    _, err = proc.communicate(timeout=60)
    assert err == b"" and proc.returncode == 141


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-c", "0"], "argument -c/--concurrency: 0 is not a whole number >= 1"),
        (["-c", "-5"], "argument -c/--concurrency: -5 is not a whole number >= 1"),
        (["-c", "many"], "argument -c/--concurrency: 'many' is not a whole number >= 1"),
        (["-l", "verbose"], "'verbose' is not a log level; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (["--prefetch-multiplier", "0"], "0 is not a whole number >= 1"),
    ],
)
def test_worker_flags_are_validated_before_anything_starts(
    redis_url: str, flags: list[str], message: str
) -> None:
    proc = _cli(redis_url, "worker", "-A", "tests.apps.basic", *flags)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1


def test_parsed_flags_reach_the_settings() -> None:
    from greenq.app import GreenQ
    from greenq.cli import build_parser
    from greenq.loader import apply_flags

    args = build_parser().parse_args(["worker", "-l", "debug", "-E", "-c", "7"])
    assert args.loglevel == "DEBUG"
    app = GreenQ("flags")
    overrides = apply_flags(app, args)
    assert overrides == {"worker_concurrency": 7, "worker_send_task_events": True}
    assert (
        app.conf.worker_send_task_events is True and app.conf_origin["worker_concurrency"] == "command line"
    )


def test_the_worker_command_line_is_parsed_alone_without_the_other_commands() -> None:
    """``greenq worker`` builds the worker's parser only: the same flags, and none of the other
    commands' modules imported (start-up a worker need not pay)."""
    probe = """
import sys
from greenq.cli import build_parser, cmd_worker
OTHERS = ("greenq.ops_cli", "greenq.schedule_cli", "greenq.dashboard.server")
flags = ["worker", "-c", "7", "-Q", "a,b", "-l", "debug"]
args = build_parser(only_worker=True).parse_args(flags)
assert (args.concurrency, args.queues, args.loglevel) == (7, ["a", "b"], "DEBUG")
assert args.handler is cmd_worker
print(sorted(m for m in OTHERS if m in sys.modules))
import contextlib, io
from greenq.cli import main
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
    main(["worker", "--help"])  # the command line's own path
print(sorted(m for m in OTHERS if m in sys.modules))
build_parser()
print(sorted(m for m in OTHERS if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    alone, through_main, full = proc.stdout.splitlines()
    assert alone == through_main == "[]"
    assert full == "['greenq.dashboard.server', 'greenq.ops_cli', 'greenq.schedule_cli']"


def test_version_is_the_package_version() -> None:
    import greenq

    proc = _cli("redis://127.0.0.1:1/0", "--version")
    assert proc.returncode == 0 and proc.stdout == f"greenq {greenq.__version__}\n"
