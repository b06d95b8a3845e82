"""Safe by default, against real ``greenq dashboard`` processes: nothing beyond localhost without
a password or an explicit --no-auth, Basic auth enforced (in the browser too, and on the live
feed), a read-only dashboard shows no action and refuses any POST, pages carry a CSP, and the
broker's password is never shown."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from greenq import admin
from tests.dashboard import dash_app
from tests.dashboard.conftest import APP, ROOT, DashboardProcess, Stack, subprocess_env, until

ELSEWHERE = "127.0.0.2"  # a loopback address other than 127.0.0.1: "beyond localhost" to the rule


def fetch(url: str, auth: str | None = None, data: bytes | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def test_binding_beyond_localhost_needs_auth_or_an_explicit_no_auth(stack: Stack) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "greenq", "dashboard", "-A", APP, "--bind", "0.0.0.0", "--port", "0"],
        cwd=ROOT,
        env=subprocess_env(stack.url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert "refusing to serve the dashboard on 0.0.0.0 without a password" in refused.stderr
    assert "serving" not in refused.stdout
    open_one = DashboardProcess(stack.url, "--bind", ELSEWHERE, "--port", "0", "--no-auth")
    try:
        assert "WARNING: the dashboard on 127.0.0.2 has no authentication (--no-auth)" in open_one.output
        assert fetch(open_one.base + "/")[0] == 200
    finally:
        open_one.stop()


def test_auth_is_enforced_when_bound_beyond_localhost(stack: Stack, browser: Any) -> None:
    guarded = DashboardProcess(
        stack.url, "--bind", ELSEWHERE, "--port", "0", env={"GREENQ_DASHBOARD_AUTH": "alice:s3cret"}
    )
    try:
        assert guarded.base.startswith(f"http://{ELSEWHERE}:")
        for path in ("/", "/events", "/static/dashboard.js", "/dead", "/nowhere"):
            status, _, headers = fetch(guarded.base + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Basic")
        assert fetch(guarded.base + "/", "alice:wrong")[0] == 401
        assert fetch(guarded.base + "/", "mallory:s3cret")[0] == 401
        assert fetch(guarded.base + "/queues/parked/purge", data=b"confirmed=1")[0] == 401
        status, body, _ = fetch(guarded.base + "/", "alice:s3cret")
        assert status == 200 and "<h1>Overview</h1>" in body
        context = browser.new_context(http_credentials={"username": "alice", "password": "s3cret"})
        try:
            page = context.new_page()
            page.goto(guarded.base + "/")
            until(page, "document.getElementById('live-state').textContent.startsWith('live')")
        finally:
            context.close()
    finally:
        guarded.stop()


def test_read_only_shows_no_action_and_refuses_every_post(stack: Stack, page: Any) -> None:
    dash_app.parked.map([("read-only",)] * 2)
    result = dash_app.flaky.delay("read-only")
    assert stack.app.broker.wait_result(result.id, 20.0)
    before = admin.queue_stats(stack.app.broker, "parked")
    viewer = DashboardProcess(stack.url, "--port", "0", "--read-only")
    try:
        page.goto(viewer.base + "/queues/parked")
        assert "read-only" in page.locator("header .badge").inner_text()
        assert page.locator("main form[method=post]").count() == 0
        page.goto(viewer.base + "/dead?queue=fragile")
        assert page.locator("main form[method=post], main button[formaction]").count() == 0
        page.goto(f"{viewer.base}/tasks/{result.id}")
        assert page.locator("main form[method=post]").count() == 0
        for path, data in (
            ("/queues/parked/purge", b"confirmed=1"),
            ("/dead/requeue", b"queue=fragile&all=1&confirmed=1"),
            ("/dead/delete", b"queue=fragile&all=1&confirmed=1"),
        ):
            status, body, _ = fetch(viewer.base + path, data=data)
            assert status == 403 and "read-only" in body, path
    finally:
        viewer.stop()
    after = admin.queue_stats(stack.app.broker, "parked")
    assert (after.ready, after.dead) == (before.ready, before.dead)
    assert admin.queue_stats(stack.app.broker, "fragile").dead >= 1


def test_pages_carry_a_csp_and_never_show_the_broker_password(stack: Stack) -> None:
    secret_url = stack.url.replace("redis://", "redis://default:hunter2@")
    shown = DashboardProcess(secret_url, "--port", "0", env={"GREENQ_MESSAGE_SIGNING_KEY": "k" * 32})
    try:
        for path in ("/", "/dead", "/scheduled", "/queues/parked", "/tasks/nope"):
            status, body, headers = fetch(shown.base + path)
            assert status == 200, path
            assert "hunter2" not in body and "k" * 32 not in body
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            assert headers["X-Frame-Options"] == "DENY"
        assert "redis://default:***@" in fetch(shown.base + "/")[1]
    finally:
        shown.stop()
