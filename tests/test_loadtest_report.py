"""loadtests/report.py writes its prose from the run's own figures, not from numbers typed once.

The page is regenerated after every load test; a sentence with a hard-coded cost ("~1.3 ms per
GET") went stale the first time the machine got faster. These tests rebuild the page from the
committed results.json and from a copy with other CPU figures, and read the sentences back.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from loadtests import report

RESULTS = Path(report.ROOT) / "docs" / "loadtests" / "results.json"


def render(results: dict[str, Any], tmp_path: Path) -> str:
    doc = tmp_path / "loadtests.md"
    report.write(results, doc, tmp_path / "img")
    return doc.read_text()


def http_gevent(results: dict[str, Any]) -> dict[str, Any]:
    found = report.scenario_result(results, "http-gevent")
    assert found is not None, "the committed results.json has no http-gevent scenario"
    return found


def test_cost_sentences_follow_the_http_scenario_figures(tmp_path: Path) -> None:
    results = json.loads(RESULTS.read_text())
    costs = report.per_task_ms(http_gevent(results))
    page = render(results, tmp_path)
    assert f"the worker ({costs['worker']:.2f} ms)" in page
    assert f"the target ({costs['target']:.2f} ms per request)" in page
    assert f"One `http_get` task cost the worker {costs['worker']:.2f} ms of CPU in this run" in page

    busier = copy.deepcopy(results)
    http_gevent(busier)["usage"]["cpu_pct"]["worker"] *= 3
    tripled = report.per_task_ms(http_gevent(busier))["worker"]
    assert abs(tripled - 3 * costs["worker"]) < 1e-9
    page = render(busier, tmp_path / "busier")
    assert f"the worker ({tripled:.2f} ms)" in page
    assert f"the worker ({costs['worker']:.2f} ms)" not in page


def test_a_run_without_the_http_scenario_says_so_instead_of_inventing_a_figure(tmp_path: Path) -> None:
    results = json.loads(RESULTS.read_text())
    results["scenarios"] = [r for r in results["scenarios"] if r["scenario"]["key"] != "http-gevent"]
    page = render(results, tmp_path)
    assert "the worker (n/a)" in page
    assert "One `http_get` task cost the worker n/a of CPU" in page
