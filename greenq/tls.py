"""TLS settings: Celery's ``broker_use_ssl`` dict checked and folded into the broker URL.

Every connection greenq opens (the producer's stack, each worker thread's ``Link``, the
``app.redis`` pool and its multiplexer, the asyncio transport, the operator commands, prefork
children) is made from the one broker URL. So the TLS options travel in that URL, as the query
parameters redis-py reads (``rediss://host:6380/0?ssl_ca_certs=...&ssl_cert_reqs=required``),
and no connection can be made without them. Imports: exceptions only.
"""

from __future__ import annotations

import difflib
import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from greenq.exceptions import ConfigError

# Celery's (and redis-py's) names; the value kind each takes.
OPTIONS = {
    "ssl_cert_reqs": "required | optional | none (or ssl.CERT_*)",
    "ssl_ca_certs": "a PEM file of CA certificates",
    "ssl_ca_path": "a directory of CA certificates",
    "ssl_certfile": "the client certificate (PEM)",
    "ssl_keyfile": "the client certificate's private key (PEM)",
    "ssl_password": "the private key's password",
    "ssl_check_hostname": "true | false",
}
FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
SECRET_PARAMETERS = frozenset({"password", "ssl_password", "sentinel_password"})  # read from a URL query
_CERT_REQS = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}
_CERT_REQS_CONSTANTS: dict[int, str] = {
    ssl.CERT_REQUIRED: "required",
    ssl.CERT_OPTIONAL: "optional",
    ssl.CERT_NONE: "none",
}


def _cert_reqs(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in _CERT_REQS_CONSTANTS:
        return _CERT_REQS_CONSTANTS[value]
    found = _CERT_REQS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f"{name}: ssl_cert_reqs got {value!r}; expected {OPTIONS['ssl_cert_reqs']}")
    return found


def _bool(name: str, key: str, value: Any) -> str:
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in {"true", "false", "1", "0", "yes", "no"}:
        return "true" if text in {"true", "1", "yes"} else "false"
    raise ConfigError(f"{name}: {key} got {value!r}; expected true or false")


def check_options(name: str, value: Any, source: str) -> dict[str, str] | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl``: None, True (TLS with the defaults:
    certificates required, the system's CAs) or a dict of the ``OPTIONS``; JSON from the
    environment. Returns the options as URL query values; ``ConfigError`` names what is wrong."""
    where = f"setting {name!r} (from {source})"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"", "none", "false", "0", "no"}:
            return None
        if text in {"true", "1", "yes"}:
            return {}
        import orjson

        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{where} got {value!r}; expected a JSON object of ssl_* options") from None
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} got {value!r}; expected a dict of ssl_* options or True")
    return {key: _option(where, key, option) for key, option in value.items()}


def _option(where: str, key: Any, value: Any) -> str:
    if key not in OPTIONS:
        close = difflib.get_close_matches(str(key), OPTIONS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(OPTIONS)}"
        raise ConfigError(f"{where}: unknown TLS option {key!r}{hint}")
    if key == "ssl_cert_reqs":
        return _cert_reqs(where, value)
    if key == "ssl_check_hostname":
        return _bool(where, key, value)
    if not isinstance(value, str) or not value:
        shown = "***" if key in SECRET_PARAMETERS else repr(value)
        raise ConfigError(f"{where}: {key} got {shown}; expected {OPTIONS[key]}")
    if key in FILES and not os.path.exists(value):
        raise ConfigError(f"{where}: {key} {value!r} does not exist")
    return value


def tls_url(url: str, options: Mapping[str, str] | None, source: str = "broker_use_ssl") -> str:
    """``url`` with the TLS ``options`` as query parameters (they beat the URL's own), its
    scheme ``rediss`` (``rediss+sentinel``, ``rediss+cluster``: TLS to every node) when there
    are any (as Celery turns TLS on for ``broker_use_ssl``), and a ``rediss`` URL's own
    ``ssl_*`` parameters checked. A plain URL is returned as it is."""
    parts = urlsplit(url)
    base, plus, kind = parts.scheme.partition("+")  # sentinel: TLS to the master; cluster: to each node
    if options is None and base != "rediss":
        return url
    if base not in ("redis", "rediss") or kind not in ("", "sentinel", "cluster"):
        raise ConfigError(
            f"setting {source!r}: TLS needs a redis://, rediss://, redis+sentinel:// or"
            f" redis+cluster:// broker_url, not {parts.scheme}://"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key in [k for k in query if k in OPTIONS]:  # other ssl_* parameters: redis-py checks them
        query[key] = _option("setting 'broker_url'", key, query[key])
    query.update(options or {})
    return urlunsplit(parts._replace(scheme="rediss" + plus + kind, query=urlencode(query, safe="/")))


def mask_query(query: str) -> str:
    """A URL query with the values of ``password`` and ``ssl_password`` replaced by ``***``."""
    if "password" not in query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, "***" if k in SECRET_PARAMETERS else v) for k, v in pairs], safe="*/")


def fold(values: dict[str, Any]) -> None:
    """Put ``broker_use_ssl`` into the merged settings' ``broker_url`` (see the module's docstring)."""
    options, backend = values.get("broker_use_ssl"), values.get("redis_backend_use_ssl")
    if backend is not None and backend != options:
        raise ConfigError(
            "setting 'redis_backend_use_ssl' differs from 'broker_use_ssl': greenq keeps results"
            " on the broker, over the broker's connections; set broker_use_ssl only"
        )
    url = values.get("broker_url")
    if url is None:
        if options is not None:
            raise ConfigError("setting 'broker_use_ssl' needs a broker_url (the embedded Redis has no TLS)")
        return
    values["broker_url"] = tls_url(url, options)
