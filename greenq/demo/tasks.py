"""The demo's task: an HTTP GET through greenq.http, the shared pool-sized client per process.

Results expire after 10 minutes: a demo's figures are read at once, and thousands of result
keys should not stay in the user's Redis for a day.
"""

from __future__ import annotations

from greenq import http
from greenq.app import GreenQ

app = GreenQ("demo", task_default_queue="greenq-demo", result_expires=600)


@app.task
def fetch(url: str) -> int:
    """GET a URL and return its status code."""
    return http.get(url, timeout=10).status_code
