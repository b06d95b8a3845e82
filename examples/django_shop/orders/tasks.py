"""The orders app's tasks, found by ``app.autodiscover_tasks()``."""

import os
import socket

from shop.greenq_app import app

from greenq.contrib.django import close_db_connections
from orders.models import Order


@app.task
@close_db_connections  # the gevent pool runs each task in a new greenlet, with its own connection
def confirm_order(order_id: int) -> str:
    """Reads the order the view committed and marks it confirmed.

    Sent with ``delay_on_commit``, so the row is always there; without it, a fast worker
    would run before the view's transaction commits and hit DoesNotExist.
    """
    order = Order.objects.get(pk=order_id)
    order.status = "confirmed"
    order.confirmed_by = f"{socket.gethostname()}:{os.getpid()}"
    order.save(update_fields=["status", "confirmed_by"])
    send_receipt.delay(order.pk)
    return order.status


@app.task
@close_db_connections
def send_receipt(order_id: int) -> str:
    """Stands in for an e-mail; routed to the shop-mail queue by GREENQ_TASK_ROUTES."""
    order = Order.objects.get(pk=order_id)
    return f"receipt for {order}"
