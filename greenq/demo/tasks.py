"""The demo's task: an HTTP GET through greenq.http, the shared pool-sized client per process."""

from __future__ import annotations

from greenq import GreenQ, http

app = GreenQ("demo", task_default_queue="demo")


@app.task
def fetch(url: str) -> int:
    """GET a URL and return its status code."""
    return http.get(url, timeout=10).status_code
