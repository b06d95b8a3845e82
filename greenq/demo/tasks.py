"""The demo's tasks: an HTTP GET through one shared, pool-sized requests session per process."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from greenq import GreenQ

app = GreenQ("demo", task_default_queue="demo")
_session: requests.Session | None = None


def session() -> requests.Session:
    global _session
    if _session is None:
        _session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=1000)
        _session.mount("http://", adapter)
    return _session


@app.task
def fetch(url: str) -> int:
    """GET a URL and return its status code."""
    return session().get(url, timeout=10).status_code
