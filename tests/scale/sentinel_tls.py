"""Certificates for Sentinel over TLS (tests/scale/test_sentinel.py), made with the openssl CLI
by tests/security/conftest.py's helpers: a CA, a certificate for 127.0.0.1 that every server and
sentinel shows (and shows as a client to its peers), and a client certificate for greenq whose
key is encrypted."""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import EC, SECRET, _issue, _openssl


def make_certs(folder: Path) -> dict[str, str]:
    """The paths of ``ca.crt``, ``server.crt``, ``server.key``, ``client.crt``, ``client-enc.key``."""
    _openssl(folder, f"req -x509 {EC} -keyout ca.key -out ca.crt -days 2 -subj /CN=ca")
    _issue(folder, "ca", "server")
    _issue(folder, "ca", "client")
    _openssl(folder, f"pkey -in client.key -aes256 -passout pass:{SECRET} -out client-enc.key")
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client-enc.key")
    return {name: str(folder / name) for name in names}


def client_options(certs: dict[str, str]) -> dict[str, str]:
    """redis-py's ``ssl_*`` options (also URL query parameters) of a client the servers accept."""
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": certs["ca.crt"],
        "ssl_certfile": certs["client.crt"],
        "ssl_keyfile": certs["client-enc.key"],
        "ssl_password": SECRET,
    }
