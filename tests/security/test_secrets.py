"""Passwords never leave the process: not in the worker's INFO log, ``greenq status`` (table and
JSON), worker heartbeats, task events, connection errors or ``greenq config``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from greenq.cli import main
from greenq.embedded import RedisServer, free_port
from greenq.exceptions import BrokerUnavailable
from tests.security import secapp
from tests.security.conftest import SECRET, apply_rule, user_url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def test_no_password_in_logs_status_heartbeats_or_events(
    acl_server: RedisServer, start_worker: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    admin = redis.Redis.from_url(acl_server.url)
    worker_url = user_url(acl_server, apply_rule(admin, "worker"))
    worker = start_worker("-c", "2", "-E", "-l", "INFO", app="tests.security.secapp", url=worker_url)
    monkeypatch.setenv("GREENQ_BROKER_URL", user_url(acl_server, apply_rule(admin, "operator")))
    secapp.app.close()
    secapp.app._settings = None
    try:
        assert secapp.add.delay(1, 2).get(timeout=20) == 3
        with pytest.raises(Exception, match="bad"):
            secapp.fail.delay("bad").get(timeout=20)
    finally:
        secapp.app.close()
        secapp.app._settings = None
    table, listed = run(capsys, "status")[1], run(capsys, "status", "--json")[1]
    assert "greenq-operator:***@" in table and json.loads(listed)["broker"].startswith(
        "redis://greenq-operator:***@"
    )
    events = run(capsys, "events", "--from-start", "--count", "6")[1]
    assert " succeeded " in events and " failed " in events
    raw = [admin.xrange("greenq:events"), admin.mget(admin.keys("greenq:worker:*"))]
    assert "greenq-worker:***@" in worker.output and " INFO/" in worker.output
    for shown in (table, listed, events, repr(raw), worker.output):
        assert SECRET not in shown


def test_no_password_in_connection_errors_or_greenq_config(
    acl_server: RedisServer, certs: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    apply_rule(redis.Redis.from_url(acl_server.url), "producer")
    wrong = f"{SECRET}-wrong"
    monkeypatch.setenv("GREENQ_BROKER_URL", f"redis://greenq-producer:{wrong}@127.0.0.1:{acl_server.port}/0")
    code, refused = run(capsys, "status")
    assert code == 1 and "invalid username-password pair" in refused and "greenq-producer:***@" in refused
    monkeypatch.setenv("GREENQ_BROKER_URL", f"redis://greenq-producer:{SECRET}@127.0.0.1:{free_port()}/0")
    secapp.app.close()
    secapp.app._settings = None
    with pytest.raises(BrokerUnavailable) as unreachable:
        secapp.add.delay(1, 1)
    secapp.app.close()
    secapp.app._settings = None
    assert "greenq-producer:***@" in str(unreachable.value)
    # Every place a secret can be configured, shown by greenq config.
    monkeypatch.setenv("GREENQ_BROKER_URL", f"rediss://u:{SECRET}@127.0.0.1:1/0?password={SECRET}")
    ssl = {"ssl_ca_certs": certs["ca.crt"], "ssl_keyfile": certs["client-enc.key"], "ssl_password": SECRET}
    monkeypatch.setenv("GREENQ_BROKER_USE_SSL", json.dumps(ssl))
    monkeypatch.setenv("GREENQ_MESSAGE_SIGNING_KEY", SECRET)
    code, config = run(capsys, "config")
    assert code == 0 and "broker_use_ssl" in config and "ssl_password=***" in config
    for shown in (refused, str(unreachable.value), config):
        assert SECRET not in shown and wrong not in shown
