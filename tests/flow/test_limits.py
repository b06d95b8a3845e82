"""Rate strings and limit options are checked where they are given (no Redis needed)."""

from __future__ import annotations

import pytest

from greenq import GreenQ
from greenq.config import build_settings
from greenq.exceptions import ConfigError
from greenq.limits import NAME_MAX, deadline_of, limit_name, parse_rate, task_limits


@pytest.mark.parametrize(
    ("given", "per_s", "text"),
    [
        ("100/s", 100.0, "100/s"),
        ("10/m", 10 / 60, "10/m"),
        ("5/h", 5 / 3600, "5/h"),
        (2.5, 2.5, "2.5/s"),
        ("7", 7.0, "7/s"),
    ],
)
def test_celerys_rate_strings(given: object, per_s: float, text: str) -> None:
    rate = parse_rate(given, "here")
    assert rate is not None and rate.per_s == pytest.approx(per_s) and rate.text == text
    assert rate.interval_ms == pytest.approx(1000 / per_s)


@pytest.mark.parametrize("given", [None, 0, "0"])
def test_no_rate(given: object) -> None:
    assert parse_rate(given, "here") is None


@pytest.mark.parametrize("given", ["10/x", "fast", "-1/s", True, [10]])
def test_a_bad_rate_is_an_error_naming_where(given: object) -> None:
    with pytest.raises(ConfigError, match="here"):
        parse_rate(given, "here")


def test_task_options_are_checked_when_the_task_is_defined() -> None:
    app = GreenQ("limits-test")
    with pytest.raises(ConfigError, match="rate limit '10/x'"):
        app.task(rate_limit="10/x")(lambda: None)
    with pytest.raises(ConfigError, match="concurrency_limit"):
        app.task(concurrency_limit=0)(lambda: None)
    with pytest.raises(ConfigError, match="needs rate_limit or concurrency_limit"):
        app.task(limit_key=lambda url: url)(lambda url: None)
    with pytest.raises(ConfigError, match="limit_key must be a function"):
        app.task(limit_key="host", concurrency_limit=2)(lambda url: None)
    task = app.task(limit_key=lambda url: url.split("/")[2], concurrency_limit=2, rate_limit="3/s")(
        lambda url: None
    )
    check = task_limits(task.options).check(task.name, ["http://a.example/x"], {}, parse_rate("9/s", "q"))
    assert [name for name, _ in check.rates] == [None, f"{task.name}|a.example"]
    assert check.lease == (f"{task.name}|a.example", 2)
    unkeyed = task_limits(task.options).check(task.name, ["http://a.example/x"], {}, None)
    assert unkeyed.rates[0][0] == f"{task.name}|a.example"


def test_queue_rate_limits_setting_is_checked() -> None:
    settings, _ = build_settings([("code", {"queue_rate_limits": {"partner": "50/s", "slow": 2}})])
    assert settings.queue_rate_limits == {"partner": "50/s", "slow": "2/s"}
    with pytest.raises(ConfigError, match="queue_rate_limits\\['partner'\\]"):
        build_settings([("code", {"queue_rate_limits": {"partner": "50 per second"}})])
    with pytest.raises(ConfigError, match="expected a dict"):
        build_settings([("environment", {"queue_rate_limits": "[1]"})])


def test_long_limit_names_keep_the_task_and_are_hashed() -> None:
    name = limit_name("crawl.fetch", "x" * 500)
    assert len(name) <= NAME_MAX + 60 and name.startswith("crawl.fetch|#")
    assert limit_name("crawl.fetch", "x" * 500) == name != limit_name("crawl.fetch", "y" * 500)


def test_the_deadline_is_the_soonest_limit() -> None:
    assert deadline_of(100.0, None, None, None) is None
    assert deadline_of(100.0, 30.0, 10.0, None) == 110.0
    assert deadline_of(100.0, 30.0, None, 105.0) == 105.0
