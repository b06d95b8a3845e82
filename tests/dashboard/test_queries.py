"""The dashboard's reads against a real Redis: the overview costs the same commands for 100 or
40,000 waiting messages (it never scans a stream), dead letters page through 100,000 entries by
cursor, filters and bulk actions touch exactly the matches, and the WSGI app works mounted under
a URL prefix (served by a real threaded HTTP server, driven by the browser)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import redis

from greenq.broker.keys import GROUP, Keys
from greenq.broker.redis import RedisBroker
from greenq.dashboard import deadletters, queries, wsgi_app
from greenq.message import Message, encode
from tests.dashboard.conftest import Stack, until


def fill(r: redis.Redis, queue: str, count: int, start: int = 0) -> None:
    r.sadd(Keys.QUEUES, queue)
    body = encode(Message(id="x" * 32, task="tests.dashboard.dash_app.parked", args=["v"], queue=queue))
    for first in range(start, start + count, 10_000):
        pipe = r.pipeline(transaction=False)
        for _ in range(first, min(start + count, first + 10_000)):
            pipe.xadd(Keys.stream(queue), {"m": body})
        pipe.execute()


def commands(r: redis.Redis) -> dict[str, int]:
    """Calls per command since CONFIG RESETSTAT, less the test's own CONFIG and INFO."""
    stats = r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): v["calls"]
        for k, v in stats.items()
        if k not in ("cmdstat_config", "cmdstat_info")
    }


def test_the_overview_never_scans_a_stream(any_redis_url: str) -> None:
    broker = RedisBroker(any_redis_url)
    r = redis.Redis.from_url(any_redis_url)
    fill(r, "small", 100)
    fill(r, "big", 100)
    r.xgroup_create(Keys.stream("big"), GROUP, id="0")
    r.xreadgroup(GROUP, "c1", {Keys.stream("big"): ">"}, count=30)  # 30 delivered, not acked
    queries.overview(broker)  # connects (redis-py's CLIENT SETINFO) before anything is counted
    spent = []
    for extra in (0, 40_000):
        fill(r, "big", extra, 100)
        r.config_resetstat()
        seen = {row.name: row for row in queries.overview(broker).queues}
        spent.append(commands(r))
        assert (seen["big"].waiting, seen["big"].reserved) == (70 + extra, 30)
        assert (seen["small"].waiting, seen["small"].reserved) == (100, 0)
        assert seen["big"].oldest_age_s is not None
    assert spent[0] == spent[1]  # the same commands, however many messages wait
    assert spent[0]["xrange"] == 2  # one seek (COUNT 1) per busy band, for the oldest age
    assert not {"xread", "xreadgroup", "scan", "keys", "xrevrange", "lrange"} & set(spent[0])


def test_dead_letters_page_through_100_000_entries(redis_url: str, r: redis.Redis) -> None:
    broker = RedisBroker(redis_url)
    r.sadd(Keys.QUEUES, "deep")
    body = encode(Message(id="d" * 32, task="shop.tasks.sync", args=[1], queue="deep"))
    total = 100_000
    for first in range(0, total, 10_000):
        pipe = r.pipeline(transaction=False)
        for i in range(first, first + 10_000):
            reason = "rare: gone" if i % 1000 == 0 else "failed: ValueError"
            pipe.xadd(Keys.dead("deep"), {"m": body, "reason": reason, "time": i}, id=f"{i + 1}-0")
        pipe.execute()
    none = deadletters.Filter()
    first = deadletters.page(broker, "deep", none)
    assert first.total == total and [d["entry"] for d in first.letters][:2] == ["1-0", "2-0"]
    assert first.prev is None and first.next == "50-0"
    second = deadletters.page(broker, "deep", none, after=first.next)
    assert [d["entry"] for d in second.letters] == [f"{i}-0" for i in range(51, 101)]
    assert second.prev == "51-0"
    back = deadletters.page(broker, "deep", none, before=second.prev)
    assert [d["entry"] for d in back.letters] == [d["entry"] for d in first.letters]
    newest = deadletters.page(broker, "deep", none, before="")
    assert [d["entry"] for d in newest.letters] == [f"{i}-0" for i in range(total - 49, total + 1)]
    assert newest.next is None and newest.prev == f"{total - 49}-0"
    deep = deadletters.page(broker, "deep", none, after="70000-0")
    assert deep.letters[0]["entry"] == "70001-0" and deep.scanned == 50  # a seek, not a scan

    rare = deadletters.Filter(reason="RARE")
    cut = deadletters.page(broker, "deep", rare)
    assert cut.cut and len(cut.letters) == deadletters.SCAN_MAX // 1000
    assert all(d["reason"] == "rare: gone" for d in cut.letters)
    on = deadletters.page(broker, "deep", rare, after=cut.next)
    assert on.letters[0]["entry"] == f"{deadletters.SCAN_MAX + 1}-0"
    assert not deadletters.page(broker, "deep", deadletters.Filter(task="other.*")).letters

    assert deadletters.delete(broker, "deep", [], rare) == total // 1000
    assert r.xlen(Keys.dead("deep")) == total - total // 1000
    assert deadletters.delete(broker, "deep", ["2-0", "3-0"], None) == 2
    assert deadletters.delete(broker, "deep", [], deadletters.Filter()) == total - total // 1000 - 2
    assert not r.exists(Keys.dead("deep"))


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mounted(stack: Stack) -> Iterator[str]:
    """The dashboard as a WSGI app under /ops/greenq of a host app, on a threaded server."""
    dashboard = wsgi_app(stack.app)

    def host(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ops/greenq"):
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/ops/greenq", path[len("/ops/greenq") :] or "/"
            return dashboard(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"host app"]

    server = make_server("127.0.0.1", 0, host, server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/ops/greenq"
    server.shutdown()
    server.server_close()


def test_mounted_under_a_url_prefix(mounted: str, page: Any, stack: Stack) -> None:
    from tests.dashboard import dash_app

    dash_app.parked.delay("mounted")  # the queue the test opens exists, whatever ran before
    page.goto(mounted + "/")
    until(page, "document.getElementById('live-state').textContent.startsWith('live')")
    assert page.locator("header .brand").get_attribute("href") == "/ops/greenq/"
    page.get_by_role("link", name="parked").first.click()
    assert page.url.startswith(mounted + "/queues/parked")
    page.get_by_role("link", name="Dead letters").click()
    assert page.url == mounted + "/dead"
    page.fill("header input[name=id]", "no-such-task")
    page.get_by_role("button", name="Find task").click()
    assert page.url == mounted + "/tasks/no-such-task"
    assert "PENDING" in page.locator("dl.facts").inner_text()
