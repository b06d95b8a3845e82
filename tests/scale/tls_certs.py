"""Certificates for the TLS Cluster and Sentinel tests, made with the ``openssl`` CLI as
tests/security does (its helpers, imported): a CA, a server certificate for 127.0.0.1 that every
node and sentinel presents (to its peers too), and a client certificate, its key also encrypted
with ``SECRET``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from tests.security.conftest import EC, SECRET, _issue, _openssl

FILES = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "client-enc.key")


def make_certs(folder: Path) -> dict[str, str]:
    """The file of each name in ``FILES``, made in ``folder``."""
    _openssl(folder, f"req -x509 {EC} -keyout ca.key -out ca.crt -days 2 -subj /CN=ca")
    _issue(folder, "ca", "server")
    _issue(folder, "ca", "client")
    _openssl(folder, f"pkey -in client.key -aes256 -passout pass:{SECRET} -out client-enc.key")
    return {name: str(folder / name) for name in FILES}


def use_ssl(certs: dict[str, str]) -> dict[str, str]:
    """Celery's ``broker_use_ssl`` dict: our CA, our client certificate and its encrypted key."""
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": certs["ca.crt"],
        "ssl_certfile": certs["client.crt"],
        "ssl_keyfile": certs["client-enc.key"],
        "ssl_password": SECRET,
    }


def query(certs: dict[str, str]) -> str:
    """The same options as a broker URL's query."""
    return urlencode(use_ssl(certs), safe="/")
