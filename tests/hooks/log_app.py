"""A worker app for the JSON-log and shared_task tests: a ``shared_task`` written exactly as
Celery's tutorials write it (defined before any app exists), a ``cpu=True`` task for the hybrid
child, both logging through the user's own logger."""

from __future__ import annotations

import logging
import os

from greenq import GreenQ, shared_task

log = logging.getLogger("shop.tasks")


@shared_task(bind=True, max_retries=3)
def notify(self, user_id: int) -> dict:
    log.info("notifying %s (try %s)", user_id, self.request.retries)
    if self.request.retries < 1:
        raise self.retry(exc=ConnectionError("smtp down"), countdown=0)
    return {"user": user_id, "retries": self.request.retries}


app = GreenQ("logs")  # shared tasks defined before it are registered in it too


@app.task(cpu=True)
def crunch(n: int) -> list:
    log.warning("crunching %s", n)
    return [n * 2, os.getpid()]
