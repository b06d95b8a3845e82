"""A worker app that runs, as they stand, the code blocks of docs/integrations.md marked
``<!-- tested -->``: the OTLP exporter, the Sentry receiver, Django's connection handling and
request-id propagation. Sentry's SDK is pointed at a transport that writes envelopes to Redis
(never the network); Django uses a SQLite file (HOOKS_DB). Imported by the worker and by the
producer subprocess of tests/hooks/test_integrations.py, never by the pytest process.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import django
import redis
import sentry_sdk
from django.conf import settings
from sentry_sdk.transport import Transport

from greenq import GreenQ

app = GreenQ("integrations")
DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "integrations.md"
_client: list[redis.Redis] = []


def client() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(os.environ["GREENQ_BROKER_URL"]))
    return _client[0]


def tested_blocks() -> list[str]:
    """The python blocks of the doc that follow a ``<!-- tested -->`` line."""
    return re.findall(r"<!-- tested -->\n```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


class RedisTransport(Transport):
    """Sentry's envelopes go to the Redis list ``sentry`` instead of the network."""

    def capture_envelope(self, envelope: Any) -> None:
        client().rpush("sentry", envelope.serialize())


settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["HOOKS_DB"]}},
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()
sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=RedisTransport, default_integrations=False)

for _block in tested_blocks():
    exec(compile(_block, str(DOC), "exec"), globals())  # the doc's examples, as written


@app.task
def fails(x: int) -> None:
    raise ValueError(f"broken {x}")


@app.task
def db_probe() -> bool:
    """Was the connection closed when this task started? Then opens one (and leaves it open)."""
    from django.db import connection

    closed = connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("select 1")
    return closed


@app.task
def current_request_id() -> list:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    RequestIdFilter().filter(record)  # noqa: F821 - defined by the doc's block
    return [request_id.get(), record.request_id]  # type: ignore[attr-defined]  # noqa: F821
