"""Redis Sentinel (``redis+sentinel://``): producers, workers, app.redis and the operator
commands follow a failover by themselves, and nothing is lost (docs/semantics.md, Sentinel)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from greenq import GreenQ
from greenq.broker.sentinel import Resolver, parse
from greenq.config import mask_url
from greenq.exceptions import ConfigError
from tests.scale import scale_app
from tests.scale.servers import SentinelGroup, greenq_status, until
from tests.scale.tls_certs import make_certs, use_ssl


def test_the_url_names_sentinels_service_db_and_whose_password_is_whose() -> None:
    spec = parse(
        "redis+sentinel://app:pw@s1:26380,s2,[::1]:26381/mymaster/3"
        "?sentinel_password=spw&sentinel_username=watch&socket_keepalive=true"
    )
    assert spec.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert spec.service == "mymaster" and not spec.tls
    assert spec.master["db"] == 3 and spec.master["password"] == "pw" and spec.master["username"] == "app"
    assert spec.master["socket_keepalive"] is True
    assert spec.sentinel["password"] == "spw" and spec.sentinel["username"] == "watch"
    assert "sentinel_password" not in spec.master
    tls = parse("rediss+sentinel://s1/mymaster?ssl_cert_reqs=none&sentinel_ssl=true")
    assert tls.tls and tls.master["db"] == 0 and tls.sentinel["ssl"] is True
    assert tls.sentinel["ssl_cert_reqs"] == "none" and tls.master["ssl_cert_reqs"] == "none"
    only_sentinels = parse("redis+sentinel://s1/m?sentinel_ssl=true&ssl_ca_certs=/ca.crt")
    assert only_sentinels.sentinel["ssl_ca_certs"] == "/ca.crt" and only_sentinels.sentinel["ssl"] is True
    assert not only_sentinels.tls and "ssl_ca_certs" not in only_sentinels.master  # plain to the master
    with pytest.raises(ConfigError, match=r"ssl_ca_certs without TLS; use rediss\+sentinel://"):
        parse("redis+sentinel://s1/m?ssl_ca_certs=/ca.crt")
    shown = mask_url("redis+sentinel://:pw@s1:1,s2:2/m/0?sentinel_password=spw")
    assert "pw" not in shown.replace("sentinel_password", "") and "s1:1,s2:2/m/0" in shown
    for bad in (
        "redis+sentinel://s1:26379",
        "redis+sentinel:///m",
        "redis+sentinel://s1:x/m",
        "redis+sentinel://s1/m/x",
    ):
        with pytest.raises(ConfigError, match="Sentinel URL"):
            parse(bad)
    with pytest.raises(ConfigError, match=r"Celery's sentinel://.*redis\+sentinel://"):
        GreenQ("x", broker="sentinel://s1:26379;sentinel://s2:26379").broker  # noqa: B018


def test_failover_mid_drain_producer_worker_app_redis_and_status_follow(
    sentinels: SentinelGroup, producer, start_worker, redis_url: str, r: redis.Redis
) -> None:
    app = producer(sentinels.url)
    env = {"COUNTER_URL": redis_url}
    worker = start_worker("-P", "gevent", "-c", "50", app="tests.scale.scale_app", url=sentinels.url, env=env)
    loop = asyncio.new_event_loop()  # the asyncio producer, on one loop before and after
    first = scale_app.late.map([("fo", 0.05)] * 2000)
    first.append(loop.run_until_complete(scale_app.late.adelay("fo")))
    first[300].get(timeout=60)  # mid-drain, late acks in flight
    old = sentinels.master_port()
    new = sentinels.failover()
    assert new != old
    second = scale_app.late.map([("fo", 0.0)] * 300)  # the producer enqueues on the new master
    second.append(loop.run_until_complete(scale_app.late.adelay("fo")))
    assert loop.run_until_complete(second[-1].aget(timeout=60)) == second[-1].id
    loop.run_until_complete(app.aclose())
    loop.close()
    for result in first + second:
        assert result.get(timeout=90) == result.id
    done = {k.decode(): int(v) for k, v in r.hgetall("done:fo").items()}
    runs = {k.decode(): int(v) for k, v in r.hgetall("runs:fo").items()}
    assert set(done) == {result.id for result in first + second}, "nothing lost"
    again = sum(count - 1 for count in runs.values())
    assert worker.proc.poll() is None, worker.output
    assert "master moved" in worker.output or "replica now" in worker.output
    # app.redis in a task follows the master too: the key it writes is on the new master
    assert scale_app.touch.delay("touched").get(timeout=30) >= 1
    assert redis.Redis(port=new).exists("touched") == 1
    # What runs twice may still be running when every result is in: wait for the stream to empty.
    until(lambda: redis.Redis(port=new).xlen("greenq:{q:default}:stream") == 0, 60, "the stream to empty")
    status = greenq_status(sentinels.url)
    assert '"default"' in status["_text"]
    print(f"sentinel failover {old} -> {new}: 0 lost, {again} ran again")
    assert app.conf.broker_url == sentinels.url


def test_a_demoted_master_refusing_a_write_or_a_script_is_a_connection_error_to_resolve_again(
    tmp_path,
) -> None:
    """The master a connection reached turns replica under it (READONLY): the write raises
    ConnectionError (the caller's reconnect path), the connection is dropped and the resolver
    asks the sentinels again on the next connect; a replica named as master is refused (ROLE)."""
    from greenq.broker.sentinel import SentinelConnection
    from greenq.embedded import free_port
    from tests.scale.servers import data_node

    first, second = free_port(), free_port()
    nodes = [data_node(first, str(tmp_path)), data_node(second, str(tmp_path))]
    try:
        resolver = Resolver(parse("redis+sentinel://127.0.0.1:1/m"))
        resolver.address, resolver.checked = ("127.0.0.1", first), float("inf")  # as if just asked
        conns = [SentinelConnection(resolver=resolver, protocol=2) for _ in range(2)]
        for conn in conns:
            conn.send_command("SET", "k", "1")
            assert conn.read_response() == b"OK"
        redis.Redis(port=first).replicaof("127.0.0.1", second)
        commands = (("SET", "k", "2"), ("EVAL", "return redis.call('SET', 'k', '3')", 0))  # 6.2 wraps it
        for conn, command in zip(conns, commands, strict=True):
            conn.send_command(*command)
            with pytest.raises(redis.ConnectionError, match="replica now"):
                conn.read_response()
            assert conn._sock is None and resolver.checked == 0.0
            resolver.checked = float("inf")
        with pytest.raises(redis.ConnectionError, match="is a slave"):
            conns[0].connect()  # the sentinels (stale here) still name it: ROLE says otherwise
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """The group on TLS only, client certificates required (the system redis-server)."""
    certs = make_certs(tmp_path)
    group = SentinelGroup(tls=certs, client_tls=use_ssl(certs)).start()
    yield group
    group.stop()


def test_over_tls_producer_and_worker_go_through_the_sentinels_and_follow_a_failover(
    tls_sentinels: SentinelGroup, producer, start_worker, redis_url: str
) -> None:
    """``rediss+sentinel://...?sentinel_ssl=true&ssl_...``: TLS to the sentinels and the master,
    which accept nothing else; results come back before and after a ``SENTINEL FAILOVER``."""
    url = tls_sentinels.url
    assert url.startswith("rediss+sentinel://") and "sentinel_ssl=true" in url
    for port in (tls_sentinels.sentinel_ports[0], tls_sentinels.master_port()):
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            redis.Redis(port=port, socket_timeout=5).ping()  # plain TCP is refused: TLS only
    plain_master = url.replace("rediss+sentinel://", "redis+sentinel://")  # TLS to the sentinels only
    assert Resolver(parse(plain_master)).ask() == ("127.0.0.1", tls_sentinels.master_port())
    app = producer(url)
    env = {"COUNTER_URL": redis_url}
    worker = start_worker("-P", "gevent", "-c", "20", app="tests.scale.scale_app", url=url, env=env)
    loop = asyncio.new_event_loop()
    first = scale_app.late.map([("tls", 0.0)] * 200)
    first.append(loop.run_until_complete(scale_app.late.adelay("tls")))
    for result in first:
        assert result.get(timeout=60) == result.id
    old = tls_sentinels.master_port()
    new = tls_sentinels.failover()
    assert new != old
    second = scale_app.late.map([("tls", 0.0)] * 200)
    second.append(loop.run_until_complete(scale_app.late.adelay("tls")))
    assert loop.run_until_complete(second[-1].aget(timeout=60)) == second[-1].id
    loop.run_until_complete(app.aclose())
    loop.close()
    for result in second:
        assert result.get(timeout=60) == result.id
    assert scale_app.touch.delay("touched-tls").get(timeout=30) == 1  # app.redis over TLS too
    assert tls_sentinels.client(new).exists("touched-tls") == 1
    assert worker.proc.poll() is None, worker.output
    status = greenq_status(url)
    assert '"default"' in status["_text"]
    assert "Traceback" not in worker.output and "master moved" in worker.output
    assert tls_sentinels.client_tls["ssl_password"] not in worker.output + status["_text"]
