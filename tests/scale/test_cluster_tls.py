"""Redis Cluster over TLS: three masters of the system's redis-server listening on TLS ports only
(``--port 0``), cluster bus and replication over TLS, client certificates required. A worker and
the sync and asyncio producers complete tasks with results, ``app.redis`` and ``greenq status``
too, with the TLS options in a ``rediss+cluster://`` URL's query and as Celery's
``broker_use_ssl`` with a ``redis+cluster://`` URL; a plain connection is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from greenq import BrokerUnavailable, GreenQ
from tests.scale import scale_app
from tests.scale.servers import Cluster, greenq_status
from tests.scale.tls_certs import make_certs, query, use_ssl
from tests.security.conftest import SECRET

QUEUES = ["t0", "t1", "t2", "t3"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_certs(tmp_path_factory.mktemp("cluster-certs"))


@pytest.fixture(scope="module")
def tls_cluster(certs: dict[str, str]) -> Iterator[Cluster]:
    found = Cluster(3, tls=certs).start()
    yield found
    found.stop()


def _round(app: GreenQ, tag: str, r: redis.Redis) -> None:
    """Tasks to every queue (all three masters) from the sync and the asyncio producer, their
    results, and a task that uses ``app.redis`` in the worker."""
    sent = [x for q in QUEUES for x in scale_app.early.map([(tag,)] * 50, queue=q)]
    assert [x.get(timeout=60) for x in sent] == [x.id for x in sent]

    async def from_asyncio() -> list[Any]:
        results = await asyncio.gather(*(scale_app.early.aapply_async((tag,), queue=q) for q in QUEUES))
        values = [await x.aget(timeout=60) for x in results]
        await app.aclose()
        return [values, results]

    values, results = asyncio.run(from_asyncio())
    assert values == [x.id for x in results]
    runs = {k.decode(): int(v) for k, v in r.hgetall(f"runs:{tag}").items()}
    assert runs == {x.id: 1 for x in [*sent, *results]}
    assert scale_app.touch.apply_async((f"touched:{tag}",), queue="t1").get(timeout=30) == 1


def _status(url: str, **env: str) -> dict[str, Any]:
    return {q["name"]: q for q in greenq_status(url, **env)["queues"]}


def test_tls_options_in_a_rediss_cluster_url(
    tls_cluster: Cluster,
    certs: dict[str, str],
    producer: Any,
    start_worker: Any,
    redis_url: str,
    r: redis.Redis,
) -> None:
    url = f"{tls_cluster.url}?{query(certs)}"
    assert url.startswith("rediss+cluster://")
    app = producer(url)
    args = ("-P", "gevent", "-c", "20", "-Q", ",".join(QUEUES))
    worker = start_worker(*args, app="tests.scale.scale_app", url=url, env={"COUNTER_URL": redis_url})
    _round(app, "tls-url", r)
    assert SECRET not in worker.output  # the key's password is masked wherever the URL is shown
    rows = _status(url)
    assert set(QUEUES) <= set(rows) and all(rows[q]["ready"] == 0 for q in QUEUES)


def test_broker_use_ssl_with_a_cluster_url(
    tls_cluster: Cluster,
    certs: dict[str, str],
    producer: Any,
    start_worker: Any,
    redis_url: str,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = tls_cluster.url.replace("rediss+cluster://", "redis+cluster://")
    settings = json.dumps(use_ssl(certs))
    monkeypatch.setenv("GREENQ_BROKER_USE_SSL", settings)
    app = producer(plain)
    assert app.conf.broker_url.startswith("rediss+cluster://")  # broker_use_ssl turned TLS on
    args = ("-P", "gevent", "-c", "20", "-Q", ",".join(QUEUES))
    env = {"COUNTER_URL": redis_url, "GREENQ_BROKER_USE_SSL": settings}
    start_worker(*args, app="tests.scale.scale_app", url=plain, env=env)
    _round(app, "tls-setting", r)
    rows = _status(plain, GREENQ_BROKER_USE_SSL=settings)
    assert set(QUEUES) <= set(rows)
    # Without TLS the nodes answer nothing: no silent fallback to plain text
    monkeypatch.delenv("GREENQ_BROKER_USE_SSL")
    bare = GreenQ("plain", broker=plain, broker_connection_timeout=2)
    with pytest.raises(BrokerUnavailable):
        bare.send_task("x.y", queue="t0")
    bare.close()
