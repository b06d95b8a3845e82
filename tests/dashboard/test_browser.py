"""The dashboard in a real browser (headless Chromium through Playwright) against a real Redis, a
real worker and a real ``greenq dashboard`` process: the live chart, a dead letter found,
explained and requeued, escaping, purge confirmation and the CSRF check. Each test also leaves a
screenshot in docs/img for docs/dashboard.md."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import orjson

from greenq import admin
from greenq.broker.keys import Keys
from tests.dashboard import dash_app
from tests.dashboard.conftest import Stack, shot, until

SCRIPT = "<script>window.pwned=1</script>"
IMG = '<img src=x onerror="window.pwned=2">'


def waiting(stack: Stack, queue: str) -> int:
    return admin.queue_stats(stack.app.broker, queue).ready


def test_live_chart_updates_while_tasks_drain(stack: Stack, page: Any) -> None:
    dash_app.parked.delay("backlog")  # a queue nobody reads: marked as backing up
    dash_app.parked.apply_async(args=["tomorrow"], countdown=86_400)
    dash_app.flaky.delay("still-broken")  # a dead letter, for the picture
    page.goto(stack.base + "/")
    until(page, "document.getElementById('live-state').textContent.startsWith('live')")
    page.evaluate("window.sameDocument = true")
    before = int(page.get_attribute("#chart", "data-ticks") or 0)
    count = 800
    dash_app.work.map([(i, 0.1) for i in range(count)])  # about 4 s at -c 20
    page.select_option("#chart-queue", "drain")
    # Every finished task reaches the chart through the events stream, tick by tick.
    until(page, f"Number(document.getElementById('chart').dataset.done) >= {count}", 40.0)
    until(page, "document.querySelector('tr[data-queue=drain] td:nth-child(2)').textContent === '0'")
    # The worker's own count arrives with its next heartbeat.
    until(
        page,
        "Number(document.querySelector('#workers td:nth-child(7)').textContent.replace(/,/g, ''))"
        f" >= {count}",
    )
    assert page.evaluate("window.sameDocument") is True  # updated in place, never reloaded
    assert int(page.get_attribute("#chart", "data-ticks") or 0) >= before + 2
    assert "backlog" in (page.get_attribute("tr[data-queue=parked]", "class") or "")
    assert page.locator("#events-note").count() == 0  # events arrived: no more "send events" note
    page.select_option("#chart-queue", "")
    shot(page, "overview")


def _wait_failed(stack: Stack, task_id: str) -> str:
    """Block (in Redis) until the task has a result record; return that record's entry id."""
    found = stack.app.broker.wait_result(task_id, 20.0)
    assert found, "the task never finished"
    assert orjson.loads(found[1])["state"] == "FAILURE"
    return found[0]


def test_requeue_of_a_dead_letter_makes_the_task_run(stack: Stack, page: Any) -> None:
    tag = "requeue-me"
    result = dash_app.flaky.delay(tag, SCRIPT)
    failed_at = _wait_failed(stack, result.id)
    page.goto(f"{stack.base}/dead?queue=fragile&task=*.flaky&reason=broken")
    row = page.locator("table.dead tr", has_text=result.id)
    assert SCRIPT in row.inner_text()  # the argument, as text
    shot(page, "dead")
    row.get_by_role("link", name=result.id).click()
    facts = page.locator("dl.facts").inner_text()
    assert "FAILURE" in facts and f"{tag} is broken" in facts
    assert f"RuntimeError: {tag} is broken" in page.locator("pre.traceback").inner_text()
    assert SCRIPT in page.locator("pre.args").inner_text()
    timeline = page.locator("table.timeline").inner_text()
    for event in ("enqueued", "received", "started", "failed", "dead-lettered"):
        assert event in timeline
    assert page.evaluate("window.pwned") is None
    shot(page, "task")

    stack.r.set(f"fixed:{tag}", 1)
    page.get_by_role("button", name="Requeue this task").click()
    assert "requeued 1 dead letters to fragile" in page.locator(".notice").inner_text()
    found = stack.app.broker.wait_result(result.id, 20.0, after=failed_at)
    assert found and orjson.loads(found[1])["state"] == "SUCCESS"
    assert stack.r.get(f"ran:{tag}") == b"1"
    page.reload()
    assert "SUCCESS" in page.locator("dl.facts").inner_text()
    assert "fixed requeue-me" in page.locator("pre.result").inner_text()


def test_script_in_an_argument_is_shown_not_run(stack: Stack, page: Any) -> None:
    result = dash_app.parked.delay(SCRIPT + IMG)
    stack.app.send_task(IMG, args=[SCRIPT], queue="parked")  # a task name is user data too
    page.goto(stack.base + "/queues/parked")
    peek = page.locator("table.peek").inner_text()
    assert SCRIPT in peek and IMG in peek
    page.get_by_role("link", name=result.id).click()
    assert json.dumps(SCRIPT + IMG) in page.locator("pre.args").inner_text()
    assert page.evaluate("window.pwned") is None
    assert page.locator("script").count() == 1  # the dashboard's own, nothing else
    assert page.locator("main img").count() == 0


def test_purge_asks_for_confirmation(stack: Stack, page: Any) -> None:
    dash_app.parked.map([(f"p{i}",) for i in range(7)])
    count = waiting(stack, "parked")
    assert count >= 7
    page.goto(stack.base + "/queues/parked")
    page.get_by_role("button", name=re.compile(r"^Purge")).click()
    assert f"Delete the {count:,} waiting messages of queue parked?" in page.locator(".question").inner_text()
    shot(page, "purge-confirm")
    assert waiting(stack, "parked") == count  # asking deleted nothing
    page.get_by_role("link", name="Cancel").click()
    assert waiting(stack, "parked") == count
    page.get_by_role("button", name=re.compile(r"^Purge")).click()
    page.get_by_role("button", name="Yes, do it").click()
    assert f"purged {count:,} waiting messages from parked" in page.locator(".notice").inner_text()
    assert waiting(stack, "parked") == 0


def test_a_post_without_the_csrf_token_is_refused(stack: Stack, page: Any) -> None:
    dash_app.parked.map([("keep",)] * 3)
    count = waiting(stack, "parked")
    page.goto(stack.base + "/queues/parked")
    page.evaluate("document.querySelector('.actions input[name=csrf]').value = 'forged'")
    page.get_by_role("button", name=re.compile(r"^Purge")).click()
    assert "missing or wrong CSRF token" in page.locator("main").inner_text()
    page.goto(stack.base + "/queues/parked")
    page.evaluate("document.querySelector('.actions input[name=csrf]').remove()")
    page.get_by_role("button", name=re.compile(r"^Purge")).click()
    assert "missing or wrong CSRF token" in page.locator("main").inner_text()
    # Outside any browser session: no cookie, no token, even with confirmed=1.
    request = urllib.request.Request(
        f"{stack.base}/queues/parked/purge", data=b"confirmed=1&csrf=abc", method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("the POST was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
    assert waiting(stack, "parked") == count
    assert stack.r.exists(Keys.stream("parked"))


def test_requeue_many_and_delete_all_matching(stack: Stack, page: Any) -> None:
    results = [dash_app.flaky.delay(f"bulk-{i}") for i in range(3)]
    failed_at = {result.id: _wait_failed(stack, result.id) for result in results}
    page.goto(f"{stack.base}/dead?queue=fragile&task=tests.dashboard.*&reason=bulk-")
    rows = page.locator("table.dead tbody tr")
    assert rows.count() == 3
    picked = []
    for index in (0, 1):
        rows.nth(index).locator("input[name=ids]").check()
        picked.append(rows.nth(index).locator("td:nth-child(3) a").inner_text())
    page.get_by_role("button", name="Requeue selected").click()
    assert "requeued 2 dead letters to fragile" in page.locator(".notice").inner_text()
    for task_id in picked:  # they run (and fail) again
        assert stack.app.broker.wait_result(task_id, 20.0, after=failed_at[task_id])
    page.get_by_role("button", name="Delete all matching the filter…").click()
    assert (
        "Delete every dead letter of fragile matching task 'tests.dashboard.*'"
        in page.locator(".question").inner_text()
    )
    page.get_by_role("button", name="Yes, do it").click()
    assert "deleted" in page.locator(".notice").inner_text()
    page.goto(f"{stack.base}/dead?queue=fragile&reason=bulk-")
    assert page.locator("table.dead").count() == 0


def test_scheduled_page(stack: Stack, page: Any) -> None:
    later = dash_app.parked.apply_async(args=["next week"], countdown=7 * 86_400)
    page.goto(stack.base + "/scheduled")
    assert later.id in page.locator("table.delayed").inner_text()
    periodic = page.locator("table.schedules").inner_text()
    assert "nightly-report" in periodic and "03:00:00" in periodic
