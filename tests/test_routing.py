"""Routing precedence and every task_routes form, case by case."""

from __future__ import annotations

import re

import pytest

from greenq import ConfigError, GreenQ
from greenq.routing import route_task

CELERY_STYLE = (
    [("feed.tasks.*", {"queue": "feeds"}), (re.compile(r"(video|image)\.tasks\..*"), {"queue": "media"})],
)


@pytest.mark.parametrize(
    ("name", "queue"),
    [
        ("feed.tasks.import_feed", "feeds"),
        ("video.tasks.encode", "media"),
        ("image.tasks.resize", "media"),
        ("audio.tasks.mix", "default"),
    ],
)
def test_celery_style_list_of_glob_and_regex_pairs(name: str, queue: str) -> None:
    assert route_task(name, routes=CELERY_STYLE).queue == queue


def test_dict_of_globs_first_match_in_order() -> None:
    routes = {"shop.tasks.pay*": {"queue": "payments"}, "shop.*": {"queue": "shop"}, "x.y": "plain"}
    assert route_task("shop.tasks.pay_now", routes=routes).queue == "payments"
    assert route_task("shop.tasks.other", routes=routes).queue == "shop"
    assert route_task("x.y", routes=routes).queue == "plain"


def test_callable_router_and_pool_routes() -> None:
    def router(name, args, kwargs, options, task=None, **kw):
        return {"queue": "big", "pool": "prefork"} if args and args[0] > 10 else None

    assert route_task("t", routes=router, args=(11,)).queue == "big"
    assert route_task("t", routes=router, args=(11,)).pool == "prefork"
    assert route_task("t", routes=[router, {"t": {"queue": "small"}}], args=(1,)).queue == "small"


def test_precedence_call_then_task_then_routes_then_default() -> None:
    routes = {"t": {"queue": "routed"}}
    assert route_task("t", call_queue="call", task_queue="task", routes=routes).queue == "call"
    assert route_task("t", task_queue="task", routes=routes).queue == "task"
    assert route_task("t", routes=routes).queue == "routed"
    assert route_task("t", routes=routes, default_queue="dflt").queue == "routed"
    assert route_task("u", routes=routes, default_queue="dflt").queue == "dflt"


def test_app_applies_routes_and_default_queue() -> None:
    app = GreenQ("t", broker="redis://127.0.0.1:1/0", task_routes=CELERY_STYLE, task_default_queue="work")

    @app.task(name="feed.tasks.pull")
    def pull() -> None: ...

    @app.task(name="feed.tasks.own", queue="own")
    def own() -> None: ...

    @app.task(name="misc.job")
    def job() -> None: ...

    assert app.build_message("feed.tasks.pull")[0].queue == "feeds"
    assert app.build_message("feed.tasks.own")[0].queue == "own"
    assert app.build_message("feed.tasks.own", queue="call")[0].queue == "call"
    assert app.build_message("misc.job")[0].queue == "work"


def test_malformed_routes_fail_at_configuration() -> None:
    with pytest.raises(ConfigError, match="unknown route key"):
        GreenQ("t", task_routes={"a.*": {"queue": "q", "exchange": "x"}})
    with pytest.raises(ConfigError, match="pool"):
        GreenQ("t", task_routes={"a.*": {"pool": "threads"}})
    with pytest.raises(ConfigError, match="not a dict, list of pairs or callable"):
        GreenQ("t", task_routes=[42])


def test_apps_route_every_call_through_a_callable_router_and_cache_static_routes() -> None:
    def by_size(name, args, kwargs, options, task=None, **kw):
        return {"queue": "big"} if args and args[0] > 10 else None

    dynamic = GreenQ("t", broker="redis://127.0.0.1:1/0", task_routes=[by_size, {"t.*": {"queue": "small"}}])
    queues = [dynamic.build_message("t.x", [n])[0].queue for n in (1, 11, 2, 12)]
    assert queues == ["small", "big", "small", "big"]

    static = GreenQ("t", broker="redis://127.0.0.1:1/0", task_routes={"t.*": {"queue": "small"}})
    assert static.build_message("t.x", [1])[0].queue == "small"
    assert static.build_message("t.x", [1], queue="call")[0].queue == "call"

    @static.task(name="t.x", queue="own")  # registered after a call was routed: its queue wins
    def x(n: int) -> None: ...

    assert static.build_message("t.x", [1])[0].queue == "own"
    static.config_from_object({"task_routes": {"t.*": {"queue": "moved"}}})
    assert static.build_message("t.y", [1])[0].queue == "moved"  # new settings, new routes
