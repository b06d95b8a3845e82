"""The crawl benchmark's task, for greenq and for Celery (scripts/bench_crawl.py).

BENCH_FRAMEWORK picks the app built at import: ``greenq`` (one task, keyed by host:
``concurrency_limit=4``, ``rate_limit="20/s"``, global over all workers) or ``celery`` (Celery
cannot key a limit, so the best it can do is one task per host, each with a per-worker
``rate_limit`` of 20/s divided by the number of workers; nothing bounds the connections per
host). Both fetch with greenq.http (geventhttpclient under gevent), so that the HTTP client
costs the same, and count each answer's status in Redis.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import redis

HOSTS = int(os.environ.get("CRAWL_HOSTS", "50"))
PER_HOST_RATE = float(os.environ.get("CRAWL_RATE", "20"))
PER_HOST_CONNECTIONS = int(os.environ.get("CRAWL_CONNECTIONS", "4"))
WORKERS = int(os.environ.get("CRAWL_WORKERS", "2"))
_client: list[Any] = []


def counter() -> Any:
    if not _client:
        pool = redis.BlockingConnectionPool.from_url(os.environ["BENCH_REDIS_URL"], max_connections=20)
        _client.append(redis.Redis(connection_pool=pool))
    return _client[0]


def fetch(url: str) -> int:
    from greenq import http

    status = http.get(url, timeout=30).status_code
    pipe = counter().pipeline(transaction=False)
    pipe.incr("crawl:done")
    pipe.incr(f"crawl:status:{status}")
    pipe.execute()
    return status


def host_index(url: str) -> int:
    return int((urlsplit(url).hostname or "127.0.0.1").rsplit(".", 1)[1])


def make_greenq(url: str, rate: float = PER_HOST_RATE) -> Any:
    from greenq import GreenQ

    made = GreenQ("crawl", broker_url=url)
    made.task(
        name="crawl.fetch",
        queue="crawl",
        ignore_result=True,
        limit_key=lambda url: urlsplit(url).hostname,
        concurrency_limit=PER_HOST_CONNECTIONS,
        rate_limit=f"{rate:g}/s",
    )(fetch)
    return made


def make_celery(url: str, hosts: int, workers: int, rate: float = PER_HOST_RATE) -> Any:
    from celery import Celery

    made = Celery("crawl", broker=url)
    made.conf.update(
        task_default_queue="crawl",
        worker_prefetch_multiplier=4,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    for n in range(1, hosts + 1):
        made.task(name=f"crawl.fetch_h{n}", rate_limit=f"{rate / workers:g}/s")(fetch)
    return made


_framework = os.environ.get("BENCH_FRAMEWORK")
if _framework == "greenq":
    app = make_greenq(os.environ["BENCH_REDIS_URL"])
elif _framework == "celery":
    celery = make_celery(os.environ["BENCH_REDIS_URL"], HOSTS, WORKERS)
