"""Tenants: ``key_prefix`` puts every key greenq builds under the app's own prefix, and the ACL
patterns ``greenq acl --prefix`` prints make Redis itself keep one app out of another's keys."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
import redis

from greenq import GreenQ
from greenq.acl import ROLES
from greenq.broker.keys import Keys
from greenq.broker.stack import Link
from greenq.cli import main
from greenq.embedded import RedisServer
from greenq.exceptions import BrokerError, ConfigError
from tests.security.conftest import apply_rule, user_url


def every_key_name(keys: type[Keys]) -> list[str]:
    """Each key name ``keys`` can build (its constants, and each builder with placeholders)."""
    names = []
    for attr in dir(keys):
        value = getattr(keys, attr)
        if attr.startswith("_") or attr == "with_prefix":
            continue
        if isinstance(value, str):
            names.append(value)
        elif inspect.ismethod(value):
            built = value(*("X" for _ in inspect.signature(value).parameters))
            names.extend(built if isinstance(built, tuple) else [built])
    return names


def test_every_key_name_is_under_the_apps_prefix() -> None:
    names = every_key_name(Keys.with_prefix("tena"))
    assert len(names) >= 20 and len(names) == len(every_key_name(Keys))
    assert [name for name in names if not name.startswith("tena:") or "greenq" in name] == []
    assert Keys.with_prefix("greenq") is Keys and Keys.EVENTS == "greenq:events"  # the default is unchanged


@pytest.mark.parametrize("bad", ["", "a:b", "app*", "{app}", "a b", "x" * 65, "tenant?", "app\n"])
def test_key_prefix_is_checked(bad: str) -> None:
    with pytest.raises(ConfigError, match="setting 'key_prefix' got"):
        GreenQ("t", broker="redis://127.0.0.1:1/0", key_prefix=bad)


def test_the_acl_patterns_of_one_prefix_keep_redis_from_serving_another(acl_server: RedisServer) -> None:
    admin = redis.Redis.from_url(acl_server.url)
    tena, tenb = Keys.with_prefix("tena"), Keys.with_prefix("tenb")
    for keys in (tena, tenb, Keys):
        admin.xadd(keys.result("t1"), {"r": b"{}"})
        admin.xadd(keys.stream("default"), {"m": b"{}"})
    producer = Link(user_url(acl_server, apply_rule(admin, "producer", "tena")), 2.0, 5.0)
    worker = Link(user_url(acl_server, apply_rule(admin, "worker", "tena")), 2.0, 5.0)
    assert len(producer.call("XREVRANGE", tena.result("t1"), "+", "-")) == 1
    assert producer.call("XADD", tena.stream("default"), "*", "m", "{}")
    assert len(worker.call("XRANGE", tena.stream("default"), "-", "+")) == 2
    for link, command in [
        (producer, ("XREVRANGE", tenb.result("t1"), "+", "-")),  # another app's results
        (producer, ("XREVRANGE", Keys.result("t1"), "+", "-")),  # the default app's
        (producer, ("XADD", tenb.stream("default"), "*", "m", "{}")),  # another app's queue
        (worker, ("XRANGE", tenb.stream("default"), "-", "+")),
        (worker, ("GET", tenb.worker("w"))),
    ]:
        with pytest.raises(BrokerError, match="permission denied by the Redis ACL: this user has no perm"):
            link.call(*command)
    producer.close()
    worker.close()


def test_two_apps_with_their_own_prefix_share_one_redis_and_never_meet(
    acl_server: RedisServer, start_worker: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    admin = redis.Redis.from_url(acl_server.url)
    users = {p: {r: user_url(acl_server, apply_rule(admin, r, p)) for r in ROLES} for p in ("tena", "tenb")}
    workers = {
        p: start_worker(
            "-c", "2", app="tests.security.secapp", url=users[p]["worker"], env={"GREENQ_KEY_PREFIX": p}
        )
        for p in users
    }
    apps = {p: GreenQ(p, broker=users[p]["producer"], key_prefix=p) for p in users}
    sent = {p: [app.send_task("tests.security.secapp.tenant") for _ in range(10)] for p, app in apps.items()}
    for prefix, results in sent.items():  # the same queue name, each app's tasks ran by its own worker
        assert {result.get(timeout=20) for result in results} == {prefix}
    assert apps["tenb"].AsyncResult(sent["tena"][0].id).state == "PENDING"  # B does not see A's results
    # A's producer user, configured with B's prefix: Redis itself refuses.
    intruder = GreenQ("intruder", broker=users["tena"]["producer"], key_prefix="tenb")
    with pytest.raises(BrokerError, match="permission denied by the Redis ACL"):
        intruder.AsyncResult(sent["tenb"][0].id).get(timeout=1)
    for prefix, worker in workers.items():  # each operator's status shows its app only
        monkeypatch.setenv("GREENQ_BROKER_URL", users[prefix]["operator"])
        monkeypatch.setenv("GREENQ_KEY_PREFIX", prefix)
        assert main(["status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert [w["pid"] for w in status["workers"]] == [worker.pid]
        assert [q["name"] for q in status["queues"]] == ["default"]
    assert admin.keys("greenq:*") == [] and admin.keys("tena:*") and admin.keys("tenb:*")
    for app in [*apps.values(), intruder]:
        app.close()
