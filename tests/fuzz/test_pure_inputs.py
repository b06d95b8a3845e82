"""Property-based tests of everything that reads user input without a worker: settings from code
and the environment, routing rules, queue names, cron expressions, the envelope codec.

Each property says what must hold for *every* input: a valid value or the documented error
(ConfigError naming the setting, ValueError naming the cron field), never another exception.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import example, given
from hypothesis import strategies as st

from greenq.broker.keys import Keys, check_queue_name, parse_stream_key
from greenq.config import SETTING_NAMES, Settings, build_settings, from_env
from greenq.cron import crontab, parse_cron
from greenq.exceptions import ConfigError, DecodeError, EncodeError
from greenq.message import Message, decode, encode
from greenq.routing import route_task, validate_routes
from tests.fuzz.strategies import FUZZ, QUICK, json_values, valid_queue_names

setting_names = st.sampled_from(SETTING_NAMES) | st.text(min_size=1, max_size=20)
setting_values = (
    json_values
    | st.sampled_from(["", "none", "None", "nan", "inf", "-1", "0", "1e400", " 5 ", "true", "{}", "[]"])
    | st.floats()
)


def _names_the_setting(error: ConfigError, name: str) -> bool:
    return repr(name) in str(error) or name in str(error)


@QUICK
@given(st.dictionaries(setting_names, setting_values, max_size=5))
def test_settings_from_code_are_valid_or_a_config_error_naming_the_setting(values: dict[str, Any]) -> None:
    try:
        settings, origin = build_settings([("code", values)])
    except ConfigError as exc:
        assert any(_names_the_setting(exc, name) for name in values), str(exc)
        return
    assert isinstance(settings, Settings)
    assert set(origin) >= set(values)


@QUICK
@given(st.dictionaries(st.sampled_from(SETTING_NAMES), st.text(max_size=20), max_size=4))
def test_settings_from_the_environment_are_valid_or_a_config_error_naming_the_setting(
    values: dict[str, str],
) -> None:
    environ = {f"GREENQ_{name.upper()}": value for name, value in values.items()}
    try:
        build_settings([("environment", from_env(environ))])
    except ConfigError as exc:
        assert any(_names_the_setting(exc, name) for name in values), str(exc)


@QUICK
@given(st.text(min_size=1, max_size=30).filter(lambda s: s.upper() not in {"HOME", "CEILING_DIRECTORIES"}))
def test_an_unknown_environment_variable_is_a_config_error_naming_it(suffix: str) -> None:
    name = "GREENQ_" + suffix.upper()
    if suffix.lower() in SETTING_NAMES or not name.isprintable():
        return
    try:
        from_env({name: "1"})
    except ConfigError as exc:
        assert name in str(exc)
    else:
        raise AssertionError(f"{name} was accepted")


patterns = st.text(max_size=12) | st.sampled_from(["*", "a.*", "*.b", "?", "[ab]*", "[!a]*"])
routes = st.one_of(st.text(max_size=10), st.dictionaries(st.text(max_size=8), json_values, max_size=3))
routers = st.recursive(
    st.dictionaries(patterns, routes, max_size=3) | st.tuples(patterns, routes),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)


@QUICK
@given(routers, st.text(max_size=20))
def test_routing_rules_validate_or_raise_and_a_valid_rule_always_routes(rules: Any, name: str) -> None:
    try:
        validate_routes(rules)
    except ConfigError:
        return
    route = route_task(name, routes=rules)
    assert isinstance(route.queue, str) and route.queue


@QUICK
@given(st.text(max_size=210))
@example("default\n")  # a regex ending in $ also matched before a final newline (CI found it)
def test_queue_names_are_exactly_the_documented_alphabet(name: str) -> None:
    documented = re.fullmatch(r"[A-Za-z0-9_.:@-]{1,200}", name) is not None
    try:
        check_queue_name(name)
    except ConfigError:
        assert not documented
    else:
        assert documented


@QUICK
@given(valid_queue_names, st.integers(min_value=0, max_value=9))
def test_a_stream_key_parses_back_to_its_queue_and_priority(queue: str, priority: int) -> None:
    assert parse_stream_key(Keys.stream(queue, priority)) == (queue, priority)


cron_items = st.sampled_from(["*", "*/5", "1-5", "5/15", "mon-fri", "jan", "0", "59", "7", "32", "x", ""])
cron_fields = st.lists(cron_items | st.text(max_size=6), min_size=1, max_size=3).map(",".join)


@QUICK
@given(st.lists(cron_fields, min_size=1, max_size=6).map(" ".join) | st.text(max_size=30))
def test_cron_expressions_parse_or_raise_a_value_error(expression: str) -> None:
    try:
        parsed = parse_cron(expression)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(parsed, crontab)


def _crontab(**fields: str) -> crontab | None:
    try:
        return crontab(**fields)
    except ValueError:  # a date that never happens (Feb 31): refused when built
        return None


crontabs = st.builds(
    _crontab,
    minute=st.sampled_from(["*", "*/7", "0", "30", "0,15,45", "59"]),
    hour=st.sampled_from(["*", "2", "0-3", "*/5", "23"]),
    day_of_week=st.sampled_from(["*", "mon-fri", "sun", "6"]),
    day_of_month=st.sampled_from(["*", "1", "29", "31", "1-7"]),
    month_of_year=st.sampled_from(["*", "2", "3,10,11", "jan-mar"]),
).filter(lambda cron: cron is not None)
instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1)).map(
    lambda d: d.replace(tzinfo=timezone.utc)
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])


@FUZZ
@given(crontabs, instants, zones)
def test_the_next_cron_fire_is_after_the_bound_and_nothing_fires_in_between(
    cron: crontab, bound: datetime, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    nxt = cron.search(bound, zone, forward=True)
    if nxt is None:
        return
    assert nxt > bound
    before = cron.search(nxt - timedelta(microseconds=1), zone, forward=False)
    assert before is None or before <= bound, f"{before} fires between {bound} and {nxt}"
    if zone_name == "UTC":
        assert nxt.minute in cron.minutes and nxt.hour in cron.hours and nxt.month in cron.months


envelope_fields = st.fixed_dictionaries(
    {"v": st.just(1), "id": st.text(max_size=40), "task": st.text(max_size=9), "args": st.lists(json_values)},
    optional={"kwargs": st.dictionaries(st.text(max_size=5), json_values), "retries": json_values},
)


def _json(value: Any) -> bytes:
    """JSON text of ``value`` (the stdlib writes integers of any size, as another client may)."""
    return json.dumps(value).encode()


@QUICK
@given(st.binary(max_size=200) | envelope_fields.map(_json) | json_values.map(_json))
def test_any_body_decodes_to_a_message_or_a_decode_error(body: bytes) -> None:
    try:
        message = decode(body)
    except DecodeError:
        return
    assert isinstance(message, Message)


@QUICK
@given(st.lists(json_values, max_size=4))
def test_what_encode_accepts_decodes_to_the_same_arguments(args: list[Any]) -> None:
    message = Message(id="x", task="t", args=args)
    try:
        body = encode(message)
    except EncodeError as exc:
        assert "args" in str(exc)
        return
    assert decode(body).args == args


@FUZZ
@given(st.floats(allow_nan=True) | st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_non_finite_float_argument_is_refused_at_enqueue_naming_it(value: float) -> None:
    message = Message(id="x", task="t", args=[1, {"when": value}])
    if math.isfinite(value):
        assert decode(encode(message)).args == [1, {"when": value}]
        return
    try:
        encode(message)
    except EncodeError as exc:
        assert "args[1]['when']" in str(exc)
    else:
        raise AssertionError("NaN/inf was sent")


def test_envelope_numbers_another_client_got_wrong_are_decode_errors() -> None:
    """Found by the fuzzer: ``decode`` raised TypeError/ValueError for these (the worker, which
    dead-letters only DecodeError, crashed its fetch loop and stranded the batch), and passed a
    string eta or priority 99 through (a crashed dispatcher; a retry that no script can schedule)."""
    base = {"v": 1, "id": "x", "task": "t", "args": [], "kwargs": {}}
    for bad in (
        {"retries": [None]},
        {"retries": ":"},
        {"priority": "high"},
        {"priority": 99},
        {"created": "yesterday"},
        {"eta": "tomorrow"},
        {"expires": True},
        {"queue": 5},
    ):
        try:
            decode(json.dumps({**base, **bad}).encode())
        except DecodeError as exc:
            assert str(exc)
        else:
            raise AssertionError(f"{bad} decoded")
    assert decode(json.dumps({**base, "eta": 5, "priority": "3"}).encode()).eta == 5.0
