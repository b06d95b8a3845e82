"""Tasks found by ``app.autodiscover_tasks()``; each counts its runs per task id in Redis."""

from __future__ import annotations

import redis

from greenq.contrib.django import close_db_connections
from tests.contrib.django_app.greenq_app import app
from tests.contrib.django_app.models import Order

_clients: dict[str, redis.Redis] = {}


def client() -> redis.Redis:
    url = app.conf.broker_url or ""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


@app.task
@close_db_connections
def read_order(order_id: int, alias: str, tag: str) -> dict[str, object]:
    """Reads the row the producer committed; fails with DoesNotExist if it is not visible."""
    client().hincrby(f"runs:{tag}", read_order.request.id, 1)
    order = Order.objects.using(alias).get(pk=order_id)
    return {"id": order.pk, "sku": order.sku, "quantity": order.quantity}


@app.task
def count_run(tag: str) -> str:
    client().hincrby(f"runs:{tag}", count_run.request.id, 1)
    return count_run.request.id


@app.task
def routed() -> str:
    return "routed"


@app.task
@close_db_connections
def count_orders(alias: str) -> int:
    """A query in a fresh greenlet; its connection is closed when the task ends."""
    return Order.objects.using(alias).count()
