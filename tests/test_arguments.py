"""Arguments at enqueue: values JSON would change or lose are refused, naming where they are and how
to send them instead; plain JSON (None, big-but-64-bit ints, strings shaped like UUIDs) goes through
unchanged. Real Redis: a refused call must leave nothing in it."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest
import redis

from greenq import EncodeError, GreenQ
from greenq.broker.keys import Keys
from greenq.message import decode


def _app(url: str) -> tuple[GreenQ, Any]:
    app = GreenQ("args-test", broker=url)

    @app.task(name="t.echo")
    def echo(x: object = None, *rest: object, **named: object) -> None: ...

    return app, echo


def _sent(r: redis.Redis) -> list[Any]:
    """The args of every message in the default queue, as a worker would decode them."""
    return [decode(fields[b"m"]).args for _, fields in r.xrange(Keys.stream("default"))]


@pytest.mark.parametrize(
    ("call", "where", "reason"),
    [
        (lambda t: t.delay(float("nan")), r"args\[0\]", "NaN/infinity is not valid JSON"),
        (lambda t: t.delay(1, float("inf")), r"args\[1\]", "NaN/infinity is not valid JSON"),
        (lambda t: t.delay(x=-float("inf")), r"kwargs\['x'\]", "NaN/infinity is not valid JSON"),
        (lambda t: t.delay([1.5, {"a": [float("nan")]}]), r"args\[0\]\[1\]\['a'\]\[0\]", "NaN/infinity"),
        (lambda t: t.delay(2**70), r"args\[0\]", "integer is outside the 64-bit range"),
        (lambda t: t.delay(-(2**63) - 1), r"args\[0\]", "integer is outside the 64-bit range"),
        (lambda t: t.delay({"n": 2**64}), r"args\[0\]\['n'\]", "integer is outside the 64-bit range"),
        (lambda t: t.delay({1: "x"}), r"args\[0\]", "dict keys must be strings"),
        (lambda t: t.delay([{"a": {(1, 2): 3}}]), r"args\[0\]\[0\]\['a'\]", "dict keys must be strings"),
    ],
)
def test_values_json_would_lose_are_refused_naming_where(
    r: redis.Redis, redis_url: str, call: Any, where: str, reason: str
) -> None:
    _, echo = _app(redis_url)
    with pytest.raises(EncodeError, match=rf"^task t\.echo: {where}: {reason}"):
        call(echo)
    assert r.keys("*") == []


def test_keyword_names_must_be_strings(r: redis.Redis, redis_url: str) -> None:
    """For a task this process does not know (no signature to bind against) the encoder says it."""
    app, _ = _app(redis_url)
    with pytest.raises(
        EncodeError, match=r"^task t\.elsewhere: kwargs: dict keys must be strings, not int \(1\)"
    ):
        app.send_task("t.elsewhere", kwargs={1: "x"})
    assert r.keys("*") == []


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (
            datetime.datetime(2026, 1, 2, 3, 4, 5),
            r"type datetime is not JSON serialisable; pass \.isoformat\(\)",
        ),
        (datetime.date(2026, 1, 2), r"type date is not JSON serialisable; pass \.isoformat\(\)"),
        (datetime.time(3, 4), r"type time is not JSON serialisable; pass \.isoformat\(\)"),
        (decimal.Decimal("1.10"), r"type Decimal is not JSON serialisable; pass str\(\) or float\(\)"),
        (uuid.UUID(int=7), r"type UUID is not JSON serialisable; pass str\(\)"),
    ],
)
def test_datetimes_decimals_and_uuids_are_refused_with_the_fix(
    r: redis.Redis, redis_url: str, value: object, hint: str
) -> None:
    """One rule: none of them is converted behind the caller's back (a UUID used to arrive as a str)."""
    _, echo = _app(redis_url)
    with pytest.raises(EncodeError, match=rf"args\[0\]: {hint}"):
        echo.delay(value)
    with pytest.raises(EncodeError, match=rf"kwargs\['when'\]\['at'\]\[1\]: {hint}"):
        echo.delay(when={"at": [1, value]})
    assert r.keys("*") == []


def test_a_bad_value_in_a_batch_sends_nothing(r: redis.Redis, redis_url: str) -> None:
    _, echo = _app(redis_url)
    with pytest.raises(EncodeError, match=r"args\[0\]: NaN/infinity"):
        echo.map([(1.0,), (2.0,), (float("nan"),)])
    assert r.keys("*") == []


def test_plain_json_goes_through_unchanged(r: redis.Redis, redis_url: str) -> None:
    """The cheap checks look for ``null`` and UUID-shaped text in the body; values that look like
    that but are plain JSON (None, a UUID already a str, 64-bit limits, finite floats) pass."""
    _, echo = _app(redis_url)
    text = str(uuid.UUID(int=7))
    calls = [
        (None,),
        (None, {"k": None}, [None, 1.5]),
        (text, {"id": text}),
        (2**64 - 1, -(2**63), 1e308, -0.0),
        ("null", "NaN", "-1234-abcd-ef01-"),
    ]
    for args in calls:
        echo.delay(*args)
    assert _sent(r) == [list(args) for args in calls]
