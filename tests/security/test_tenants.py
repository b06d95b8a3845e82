"""Tenants: ``key_prefix`` puts every key greenq builds under the app's own prefix, and the ACL
patterns ``greenq acl --prefix`` prints make Redis itself keep one app out of another's keys."""

from __future__ import annotations

import inspect

import pytest
import redis

from greenq import GreenQ
from greenq.broker.keys import Keys
from greenq.broker.stack import Link
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


@pytest.mark.parametrize("bad", ["", "a:b", "app*", "{app}", "a b", "x" * 65, "tenant?"])
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
