"""TLS to a real redis-server that accepts nothing else (plain TCP off, client certificates
required): the producer (sync and asyncio), every connection of a gevent worker (fetcher,
flusher and maintenance links, ``app.redis`` and its multiplexer), results and the operator
commands; and the connections TLS must refuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from greenq import GreenQ
from greenq.embedded import RedisServer
from greenq.exceptions import BrokerUnavailable
from tests.security import secapp
from tests.security.conftest import SECRET, clean_env, cli


def tls_options(certs: dict[str, str], **changes: str) -> dict[str, str]:
    """Celery's broker_use_ssl dict: our CA, our client certificate and its encrypted key."""
    options = {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": certs["ca.crt"],
        "ssl_certfile": certs["client.crt"],
        "ssl_keyfile": certs["client-enc.key"],
        "ssl_password": SECRET,
    }
    return {**options, **changes}


@pytest.fixture
def producer(
    tls_server: RedisServer, certs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[GreenQ]:
    monkeypatch.setenv("GREENQ_BROKER_URL", f"redis://:{SECRET}@127.0.0.1:{tls_server.port}/0")
    monkeypatch.setenv("GREENQ_BROKER_USE_SSL", json.dumps(tls_options(certs)))
    secapp.app.close()
    secapp.app._settings = None
    yield secapp.app
    secapp.app.close()
    secapp.app._settings = None


def test_producer_worker_results_and_operator_commands_all_over_tls(
    tls_server: RedisServer,
    tls_admin: redis.Redis,
    certs: dict[str, str],
    producer: GreenQ,
    start_worker: Any,
) -> None:
    assert producer.conf.broker_url.startswith("rediss://")  # broker_use_ssl turned TLS on
    env = {"GREENQ_BROKER_USE_SSL": json.dumps(tls_options(certs))}
    url = f"redis://:{SECRET}@127.0.0.1:{tls_server.port}/0"
    worker = start_worker("-c", "20", "--lost-timeout", "2", app="tests.security.secapp", url=url, env=env)
    assert secapp.add.delay(2, 3).get(timeout=20) == 5
    assert secapp.add_late.delay(4, 5).get(timeout=20) == 9
    assert secapp.retry_once.delay("again").get(timeout=20) == "again"  # via the delayed set
    with pytest.raises(Exception, match="refused"):
        secapp.fail.delay("refused").get(timeout=20)
    counted = secapp.count.map([("tls:count",)] * 40)  # 40 app.redis INCRs through the multiplexer
    assert sorted(r.get(timeout=20) for r in counted) == list(range(1, 41))

    async def from_asyncio() -> Any:
        result = await secapp.add.adelay(20, 22)
        return await result.aget(timeout=20)

    assert asyncio.run(from_asyncio()) == 42
    # The operator commands, configured the way Celery documents it: everything in the URL.
    query = f"ssl_cert_reqs=required&ssl_ca_certs={certs['ca.crt']}&ssl_certfile={certs['client.crt']}"
    query += f"&ssl_keyfile={certs['client-enc.key']}&ssl_password={SECRET}"
    operator = clean_env(GREENQ_BROKER_URL=f"rediss://:{SECRET}@127.0.0.1:{tls_server.port}/0?{query}")
    status = cli("status", "--json", env=operator)
    assert status.returncode == 0, status.stderr
    [listed] = json.loads(status.stdout)["workers"]
    assert listed["pid"] == worker.pid
    shown = json.loads(cli("result", counted[0].id, env=operator).stdout)
    assert shown["state"] == "SUCCESS"
    assert int(tls_admin.get("tls:count")) == 40
    assert "Traceback" not in worker.output and "ERROR" not in worker.output


def _ping(tls_server: RedisServer, use_ssl: dict[str, str] | None) -> str:
    """Ping the TLS server as an app with these TLS settings; the error it raises, or ""."""
    url = f"redis://:{SECRET}@127.0.0.1:{tls_server.port}/0"
    app = GreenQ("probe", broker=url, broker_use_ssl=use_ssl, broker_connect_timeout=3)
    try:
        app.broker.ping()
        return ""
    except BrokerUnavailable as exc:
        return str(exc)
    finally:
        app.close()


def test_connections_tls_must_refuse_are_refused(tls_server: RedisServer, certs: dict[str, str]) -> None:
    no_client_cert = tls_options(certs)
    for name in ("ssl_certfile", "ssl_keyfile", "ssl_password"):
        no_client_cert.pop(name)
    errors = {
        "plain TCP to a TLS-only port": _ping(tls_server, None),
        "a server certificate our CA did not sign": _ping(
            tls_server, tls_options(certs, ssl_ca_certs=certs["other-ca.crt"])
        ),
        "no client certificate": _ping(tls_server, no_client_cert),
    }
    for case, error in errors.items():
        assert error.startswith(f"broker redis{'s' if 'plain' not in case else ''}://:***@127.0.0.1:"), case
        assert "unavailable" in error and SECRET not in error, (case, error)
    assert "certificate verify failed" in errors["a server certificate our CA did not sign"]
    # Celery's CERT_NONE spelling: the server's certificate is not checked (no CA given at all).
    unchecked = tls_options(certs, ssl_cert_reqs="CERT_NONE")
    unchecked.pop("ssl_ca_certs")
    assert _ping(tls_server, unchecked) == ""
