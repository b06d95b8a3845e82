"""greenq.http inside real gevent tasks and prefork children, against a local HTTP server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from greenq import GreenQ, TaskError
from greenq.embedded import free_port
from tests.apps import basic


@pytest.fixture(scope="module", params=["lean", "wsgi"])
def target(request: pytest.FixtureRequest) -> Iterator[str]:
    """The demo target, served by its lean server and by its WSGI app: both answer alike."""
    wsgi = ["--wsgi"] if request.param == "wsgi" else []
    command = [sys.executable, "-m", "greenq.demo.target", *wsgi]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[-1])
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait(10)


def test_one_client_per_process_in_gevent_tasks_and_prefork_children(
    app: GreenQ, target: str, start_worker
) -> None:
    worker = start_worker("--pool", "gevent", "-c", "50", "--cpu-workers", "1")
    in_greenlets = [r.get(timeout=30) for r in basic.http_get.map([(f"{target}/delay/50",)] * 20)]
    assert {(status, body["ok"]) for status, body, *_ in in_greenlets} == {(200, True)}
    assert {pid for _, _, _, pid, _ in in_greenlets} == {worker.pid}
    assert len({client_id for _, _, client_id, _, _ in in_greenlets}) == 1, "one client shared by all tasks"
    # geventhttpclient where sockets are gevent's; urllib3 in the unpatched child process.
    assert {transport for *_, transport in in_greenlets} == {"geventhttpclient"}
    in_child = [r.get(timeout=30) for r in basic.http_get_in_child.map([(f"{target}/delay/1",)] * 4)]
    child_pids = {pid for _, _, _, pid, _ in in_child}
    assert worker.pid not in child_pids and len(child_pids) == 1
    assert len({client_id for _, _, client_id, _, _ in in_child}) == 1
    assert {transport for *_, transport in in_child} == {"urllib3"}


def test_timeouts_http_errors_and_refused_connections(
    app: GreenQ, r: redis.Redis, target: str, start_worker
) -> None:
    start_worker("-c", "10")
    assert basic.http_timeout.delay(f"{target}/delay/2000").get(timeout=20) == "timeout"
    assert basic.http_status.delay(f"{target}/status/503").get(timeout=20) == "HTTPError 503"
    refused = basic.http_refused.delay(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(TaskError) as info:
        refused.get(timeout=30)
    assert info.value.exc_type == "ConnectionError"
    assert int(r.hget("http-refused", refused.id)) == 3  # first try + max_retries=2


@pytest.mark.parametrize("transport", ["urllib3", "geventhttpclient"])
def test_both_transports_follow_redirects_time_out_and_map_errors(target: str, transport: str) -> None:
    from greenq import http
    from greenq.http_transports import GeventTransport, Urllib3Transport

    client = http.Client(8)
    client.transport = {"urllib3": Urllib3Transport, "geventhttpclient": GeventTransport}[transport](8)
    response = client.post(f"{target}/delay/1", json={"a": 1}, params={"q": "x y"}, headers={"X-Test": "1"})
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert response.headers["content-type"] == response.headers["Content-Type"] == "application/json"
    assert "CONTENT-TYPE" in response.headers and response.headers.get("Content-Length") == "12"
    redirected = client.post(f"{target}/redirect/3", data={"a": "1"})  # 302 after a POST: GET
    assert redirected.status_code == 200 and redirected.url == f"{target}/delay/0"
    with pytest.raises(http.ConnectionError, match="more than 10 redirects"):
        client.get(f"{target}/redirect/11")
    with pytest.raises(http.Timeout):
        client.get(f"{target}/delay/2000", timeout=0.2)
    assert client.get(f"{target}/delay/1", timeout=0.2).ok  # the pool survived the timeout
    with pytest.raises(http.ConnectionError):
        client.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
    assert client.get(f"{target}/status/503").status_code == 503
    client.close()


def test_client_api_in_process(target: str) -> None:
    from greenq import http

    response = http.post(f"{target}/delay/1", json={"a": 1}, headers={"X-Test": "1"})
    assert response.status_code == 200 and response.ok and response.json() == {"ok": True}
    assert response.text == '{"ok": true}' and response.headers["Content-Type"] == "application/json"
    assert http.client() is http.client() and http.client().transport.name == "urllib3"  # unpatched
    session = http.requests_session(8)
    assert session.get(f"{target}/bytes/10", timeout=5).content == b"x" * 10
    with pytest.raises(http.HTTPError):
        http.get(f"{target}/nope").raise_for_status()


def test_app_redis_is_one_shared_pool_per_process(app: GreenQ, r: redis.Redis, start_worker) -> None:
    worker = start_worker("-c", "200")
    assert sorted(res.get(timeout=60) for res in basic.incr_shared.map([("shared",)] * 500))[-1] == 500
    seen = {tuple(res.get(timeout=30)) for res in basic.redis_client_id.map([()] * 20)}
    assert seen == {(next(iter(seen))[0], worker.pid, 50)}
    assert int(r.get("shared")) == 500


def test_app_redis_waits_for_a_free_connection_and_never_reuses_an_interrupted_one(redis_url: str) -> None:
    import threading
    import time

    from greenq.task_redis import task_client

    client = task_client(redis_url, size=1, wait_s=0.3, connect_timeout_s=5.0)
    holder = threading.Thread(target=client.blpop, args=(["wake"], 10))
    holder.start()
    watcher = redis.Redis.from_url(redis_url)
    while not any(c["cmd"] == "blpop" for c in watcher.client_list()):  # the only connection is taken
        time.sleep(0.01)
    with pytest.raises(redis.ConnectionError, match=r"no free connection in 0\.3 s"):
        client.ping()
    watcher.rpush("wake", "1")
    holder.join(10)
    assert client.ping() is True

    impatient = task_client(f"{redis_url}?socket_timeout=0.2", size=1, wait_s=5.0, connect_timeout_s=5.0)
    watcher.set("x", "value of x")
    with pytest.raises(redis.TimeoutError):
        impatient.blpop(["late"], 1)  # interrupted before its reply
    watcher.rpush("late", "stale reply")  # a kept socket would now hold BLPOP's reply first
    assert impatient.get("x") == b"value of x"


def test_app_redis_keeps_redis_py_api_and_survives_a_dropped_connection(redis_url: str) -> None:
    from greenq.task_redis import task_client

    client = task_client(redis_url, size=2, wait_s=5.0, connect_timeout_s=5.0)
    assert client.incr("n") == 1 and client.get("n") == b"1"
    assert client.pipeline().incr("n").incr("n").execute() == [2, 3]
    assert client.hgetall("missing") == {} and client.set("k", "v", nx=True) is True
    with pytest.raises(redis.ResponseError):
        client.hget("n", "field")  # WRONGTYPE comes back as redis-py raises it
    killed = redis.Redis.from_url(redis_url).client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the pooled connection is gone; the next command reconnects once
    assert client.incr("n") == 4


def test_a_keep_alive_connection_the_server_closed_is_replaced_not_reused() -> None:
    """The server answers each request on a connection, then closes it, as a server whose
    keep-alive timeout ran out does: every pooled socket is dead by the next request."""
    import socket
    import threading

    from greenq import http
    from greenq.http_transports import GeventTransport, idle_socket_usable

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    client = http.Client(4)
    client.transport = GeventTransport(4)
    assert [client.get(url, timeout=5).content for _ in range(3)] == [b"ok"] * 3
    assert len(accepted) == 3  # each request found its pooled socket closed and opened a new one
    probe = socket.create_connection(listener.getsockname())
    assert idle_socket_usable(probe)  # open, nothing to read
    closed, peer = socket.socketpair()
    peer.close()
    dirty, talker = socket.socketpair()
    talker.sendall(b"stray")
    assert not idle_socket_usable(closed) and not idle_socket_usable(dirty)
    for sock in (closed, dirty, talker):
        sock.close()
    listener.close()
    client.close()
    probe.close()
