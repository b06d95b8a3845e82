"""Schedules as pure values: cron parsing, interval alignment, DST, catch-up, loading. No Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from greenq import ConfigError, GreenQ, crontab
from greenq.schedules import Schedule, build_schedules, parse_cron

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def cron(expression: str, tz: str = "UTC", **more: object) -> Schedule:
    return Schedule("s", "t", cron=parse_cron(expression), tz=tz, **more)  # type: ignore[arg-type]


def local(schedule: Schedule, start: datetime, end: datetime, zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%d %H:%M%z") for t in schedule.fires_between(start, end)]


# ---- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("*", set(range(60))),
        ("*/15", {0, 15, 30, 45}),
        ("1,2,3", {1, 2, 3}),
        ("9-12", {9, 10, 11, 12}),
        ("9-17/4", {9, 13, 17}),
        ("50/5", {50, 55}),
        (7, {7}),
        ([1, 5], {1, 5}),
        (" 5 , 10 ", {5, 10}),
    ],
)
def test_minute_forms(spec: object, expected: set[int]) -> None:
    assert crontab(minute=spec).minutes == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("SUN", {0}),
        ("7", {0}),
        ("0,7", {0}),
        ("1-7", set(range(7))),
        ("fri-mon", {5, 6, 0, 1}),
        ("*/2", {0, 2, 4, 6}),
        ("sat,sunday", {6, 0}),
        (1, {1}),
    ],
)
def test_day_of_week_forms(spec: object, expected: set[int]) -> None:
    assert crontab(day_of_week=spec).days_of_week == expected


def test_parse_cron_fields_and_month_names() -> None:
    tab = parse_cron("*/5 9-17 1,15 jan-mar mon-fri")
    assert tab.minutes == set(range(0, 60, 5))
    assert tab.hours == set(range(9, 18))
    assert tab.days_of_month == {1, 15}
    assert tab.months == {1, 2, 3}
    assert tab.days_of_week == {1, 2, 3, 4, 5}
    assert tab.expression == "*/5 9-17 1,15 jan-mar mon-fri"
    assert tab == crontab(
        minute="0-59/5", hour="9-17", day_of_month="1,15", month_of_year="1-3", day_of_week="1-5"
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"minute": "60"}, "minute"),
        ({"minute": "*/0"}, "minute"),
        ({"minute": "a"}, "minute"),
        ({"hour": "24"}, "hour"),
        ({"hour": "1-2-3"}, "hour"),
        ({"day_of_month": "0"}, "day_of_month"),
        ({"day_of_month": "32"}, "day_of_month"),
        ({"month_of_year": "13"}, "month_of_year"),
        ({"month_of_year": "foo"}, "month_of_year"),
        ({"day_of_week": "8"}, "day_of_week"),
        ({"day_of_week": "funday"}, "day_of_week"),
        ({"day_of_week": "mon;tue"}, "day_of_week"),
        ({"minute": 1.5}, "minute"),
    ],
)
def test_field_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"crontab {field}:"):
        crontab(**kwargs)  # type: ignore[arg-type]


def test_malformed_and_impossible_expressions() -> None:
    with pytest.raises(ValueError, match="has 4 fields"):
        parse_cron("* * * *")
    with pytest.raises(ValueError, match="crontab hour:"):
        parse_cron("0 25 * * *")
    with pytest.raises(ValueError, match="can never fire"):
        crontab(minute=0, hour=0, day_of_month=30, month_of_year=2)
    with pytest.raises(ValueError, match="can never fire"):
        parse_cron("0 0 31 4,6,9,11 *")


# ---- intervals ----------------------------------------------------------------------------


def test_interval_fire_times_are_aligned_to_the_epoch() -> None:
    every_30 = Schedule("s", "t", every_s=30)
    assert every_30.next_fire(datetime(2024, 5, 1, 10, 0, 7, tzinfo=UTC)) == datetime(
        2024, 5, 1, 10, 0, 30, tzinfo=UTC
    )
    assert every_30.next_fire(datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)) == datetime(
        2024, 5, 1, 10, 1, tzinfo=UTC
    )
    moscow = datetime(2024, 5, 1, 13, 0, 7, tzinfo=ZoneInfo("Europe/Moscow"))  # any zone in, UTC out
    assert every_30.next_fire(moscow) == datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
    every_7 = Schedule("s", "t", every_s=7)
    fire = every_7.next_fire(datetime(2024, 5, 1, tzinfo=UTC))
    assert fire.timestamp() % 7 == 0 and fire.tzinfo is UTC
    half = Schedule("s", "t", every_s=timedelta(milliseconds=250).total_seconds())
    start = datetime(2024, 5, 1, tzinfo=UTC)
    assert [t - start for t in half.fires_between(start, start + timedelta(seconds=1))] == [
        timedelta(milliseconds=ms) for ms in (250, 500, 750, 1000)
    ]


def test_interval_validation() -> None:
    for bad in (0, -1, 0.0001, float("nan")):
        with pytest.raises(ValueError, match="interval"):
            Schedule("s", "t", every_s=bad)
    with pytest.raises(ValueError, match="exactly one"):
        Schedule("s", "t")
    with pytest.raises(ValueError, match="exactly one"):
        Schedule("s", "t", every_s=1, cron=crontab())
    with pytest.raises(ValueError, match="naive"):
        Schedule("s", "t", every_s=1).next_fire(datetime(2024, 1, 1))


def test_fires_between_is_bounded_and_keeps_the_newest() -> None:
    schedule = Schedule("s", "t", every_s=1, max_catch_up=10)
    end = datetime(2024, 1, 2, tzinfo=UTC)
    fires = schedule.fires_between(end - timedelta(days=30), end)
    assert len(fires) == 11 and fires[-1] == end and fires == sorted(fires)
    assert schedule.fires_between(end, end) == []


# ---- cron: calendar -----------------------------------------------------------------------


def test_cron_across_month_ends_and_leap_years() -> None:
    last_day = cron("0 12 31 * *")
    assert last_day.next_fire(datetime(2024, 1, 31, 12, tzinfo=UTC)) == datetime(2024, 3, 31, 12, tzinfo=UTC)
    leap = Schedule("s", "t", cron=crontab(minute=0, hour=0, day_of_month=29, month_of_year=2))
    assert leap.next_fire(datetime(2024, 3, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    assert leap.next_fire(datetime(2099, 3, 1, tzinfo=UTC)) == datetime(
        2104, 2, 29, tzinfo=UTC
    )  # 2100: no leap
    new_year = cron("59 23 31 12 *")
    assert new_year.next_fire(datetime(2024, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2025, 12, 31, 23, 59, tzinfo=UTC
    )


def test_day_of_month_and_day_of_week_both_match_as_in_celery() -> None:
    friday_13 = cron("0 0 13 * fri")
    assert friday_13.next_fire(datetime(2024, 1, 1, tzinfo=UTC)) == datetime(2024, 9, 13, tzinfo=UTC)
    monday_29_feb = Schedule(
        "s", "t", cron=crontab(0, 0, day_of_week="mon", day_of_month=29, month_of_year=2)
    )
    assert monday_29_feb.next_fire(datetime(2024, 3, 1, tzinfo=UTC)) == datetime(2044, 2, 29, tzinfo=UTC)


def test_cron_in_moscow_is_returned_in_utc() -> None:
    workdays = cron("*/5 9-17 * * mon-fri", tz="Europe/Moscow")
    friday_evening = datetime(2024, 5, 3, 17, 55, tzinfo=ZoneInfo("Europe/Moscow"))
    assert workdays.next_fire(friday_evening) == datetime(2024, 5, 6, 6, 0, tzinfo=UTC)  # Monday 09:00 MSK
    assert workdays.previous_fire(friday_evening) == friday_evening.astimezone(UTC)


# ---- cron: DST ----------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "spring", "fall"), [(BERLIN, 31, 27), (NEW_YORK, 10, 3)])
def test_daily_0230_on_dst_nights_runs_once(zone: ZoneInfo, spring: int, fall: int) -> None:
    daily = cron("30 2 * * *", tz=str(zone))
    start = datetime(2024, 3, spring - 1, 12, tzinfo=zone)
    gap_start = datetime(2024, 3, spring, 2, tzinfo=zone).astimezone(UTC)  # 02:30 does not exist:
    assert daily.fires_between(start, start + timedelta(days=1)) == [  # it runs at 03:00 new time
        gap_start.astimezone(zone).replace(hour=3).astimezone(UTC)
    ]
    assert local(daily, start, start + timedelta(days=2), zone)[1].endswith(
        "02:30" + ("+0200" if zone is BERLIN else "-0400")
    )
    start = datetime(2024, 10 if zone is BERLIN else 11, fall - 1, 12, tzinfo=zone)
    fires = daily.fires_between(start, start + timedelta(days=1))  # 02:30 happens twice: the first
    assert len(fires) == 1
    assert fires[0].astimezone(zone).fold == 0 and fires[0].astimezone(zone).hour == 2


def test_0130_in_new_york_fall_back_runs_at_the_first_occurrence() -> None:
    daily = cron("30 1 * * *", tz="America/New_York")
    start = datetime(2024, 11, 2, 12, tzinfo=NEW_YORK)
    assert daily.fires_between(start, start + timedelta(days=1)) == [datetime(2024, 11, 3, 5, 30, tzinfo=UTC)]
    # from inside the repeated hour (second 01:10, EST) the next run is the next day's
    second_pass = datetime(2024, 11, 3, 6, 10, tzinfo=UTC)
    assert daily.next_fire(second_pass) == datetime(2024, 11, 4, 6, 30, tzinfo=UTC)
    assert daily.previous_fire(second_pass) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)


def test_hourly_job_fires_each_wall_clock_hour_once() -> None:
    hourly = cron("0 * * * *", tz="Europe/Berlin")
    spring = local(
        hourly, datetime(2024, 3, 30, 22, 30, tzinfo=UTC), datetime(2024, 3, 31, 21, 30, tzinfo=UTC), BERLIN
    )
    assert len(spring) == 23 and spring[:4] == [
        "31 00:00+0100",
        "31 01:00+0100",
        "31 03:00+0200",
        "31 04:00+0200",
    ]
    fall = local(
        hourly, datetime(2024, 10, 26, 21, 30, tzinfo=UTC), datetime(2024, 10, 27, 22, 30, tzinfo=UTC), BERLIN
    )
    assert len(fall) == 24 and fall[1:4] == ["27 01:00+0200", "27 02:00+0200", "27 03:00+0100"]
    every_hour = Schedule("s", "t", every_s=3600)  # real hours: 25 on the 25-hour day
    assert (
        len(
            every_hour.fires_between(
                datetime(2024, 10, 26, 21, 30, tzinfo=UTC), datetime(2024, 10, 27, 22, 30, tzinfo=UTC)
            )
        )
        == 25
    )


def test_every_20_minutes_in_the_gap_and_the_repeated_hour() -> None:
    sched = cron("*/20 2 * * *", tz="Europe/Berlin")
    assert local(
        sched, datetime(2024, 3, 30, 12, tzinfo=BERLIN), datetime(2024, 3, 31, 12, tzinfo=BERLIN), BERLIN
    ) == ["31 03:00+0200"]
    assert local(
        sched, datetime(2024, 10, 26, 12, tzinfo=BERLIN), datetime(2024, 10, 27, 12, tzinfo=BERLIN), BERLIN
    ) == [
        "27 02:00+0200",
        "27 02:20+0200",
        "27 02:40+0200",
    ]


# ---- missed -------------------------------------------------------------------------------

LAST = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
AFTER_GAP = datetime(2024, 1, 1, 12, 5, 0, 300_000, tzinfo=UTC)  # 5 minutes later, just past a fire


@pytest.mark.parametrize(
    ("policy", "expected_minutes"),
    [("latest", [5]), ("all", [1, 2, 3, 4, 5]), ("skip", [5])],
)
def test_missed_after_a_five_minute_gap(policy: str, expected_minutes: list[int]) -> None:
    schedule = Schedule("s", "t", every_s=60, catch_up=policy)
    assert [t.minute for t in schedule.missed(LAST, AFTER_GAP)] == expected_minutes


@pytest.mark.parametrize("policy", ["latest", "all", "skip"])
def test_missed_when_the_due_fire_is_stale(policy: str) -> None:
    schedule = Schedule("s", "t", every_s=60, catch_up=policy, max_catch_up=3)
    now = AFTER_GAP + timedelta(seconds=20)  # the 12:05 fire is 20 s old
    expected = {"latest": [5], "all": [3, 4, 5], "skip": []}[policy]
    assert [t.minute for t in schedule.missed(LAST, now)] == expected
    assert schedule.missed(None, now) == []  # a new schedule does not fire for the past
    assert schedule.missed(None, AFTER_GAP) == [datetime(2024, 1, 1, 12, 5, tzinfo=UTC)]
    assert schedule.missed(AFTER_GAP.replace(microsecond=0), now) == []  # already fired


def test_describe() -> None:
    assert Schedule("s", "t", every_s=30).describe() == "every 30 s"
    assert Schedule("s", "t", every_s=300).describe() == "every 5 min"
    assert Schedule("s", "t", every_s=7200).describe() == "every 2 h"
    assert Schedule("s", "t", every_s=0.5).describe() == "every 0.5 s"
    assert (
        cron("*/5 9-17 * * mon-fri", tz="Europe/Moscow").describe()
        == "cron */5 9-17 * * mon-fri (Europe/Moscow)"
    )


# ---- loading ------------------------------------------------------------------------------

TASKS = {"feeds.tasks.refresh", "tasks.add", "tasks.send_report"}


def test_celery_docs_beat_schedule_loads_unchanged() -> None:
    beat_schedule = {
        "add-every-30-seconds": {"task": "tasks.add", "schedule": 30.0, "args": (16, 16)},
        "add-every-monday-morning": {
            "task": "tasks.add",
            "schedule": crontab(hour=7, minute=30, day_of_week=1),
            "args": (16, 16),
        },
        "report-every-hour": {
            "task": "tasks.send_report",
            "schedule": timedelta(hours=1),
            "kwargs": {"to": "ops"},
            "options": {"queue": "reports", "priority": 5, "expires": 600},
            "relative": False,
        },
    }
    loaded = {s.name: s for s in build_schedules(beat_schedule, [], TASKS, "Europe/Moscow")}
    assert loaded["add-every-30-seconds"].every_s == 30.0 and loaded["add-every-30-seconds"].args == (16, 16)
    monday = loaded["add-every-monday-morning"]
    assert monday.tz == "Europe/Moscow" and monday.describe() == "cron 30 7 * * 1 (Europe/Moscow)"
    assert monday.next_fire(datetime(2024, 5, 1, tzinfo=UTC)) == datetime(2024, 5, 6, 4, 30, tzinfo=UTC)
    report = loaded["report-every-hour"]
    assert report.every_s == 3600 and report.kwargs == {"to": "ops"} and report.options["queue"] == "reports"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"task": "feeds.tasks.refesh", "schedule": 30},
            "unknown task 'feeds.tasks.refesh'; did you mean 'feeds.tasks.refresh'",
        ),
        ({"task": "tasks.add", "schedule": "61 * * * *"}, "crontab minute: 61 is out of range"),
        ({"task": "tasks.add", "schedule": "* * *"}, "has 3 fields"),
        (
            {"task": "tasks.add", "schedule": crontab(), "tz": "Mars/Olympus"},
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"task": "tasks.add", "schedule": 0}, "interval 0.0 must be"),
        ({"task": "tasks.add", "schedule": timedelta(seconds=-5)}, "interval -5.0 must be"),
        ({"task": "tasks.add", "schedule": 30, "catch_up": "some"}, "catch_up 'some' must be one of"),
        ({"task": "tasks.add", "schedule": 30, "max_catch_up": 0}, "max_catch_up 0"),
        ({"task": "tasks.add", "schedule": 30, "relative": True}, "relative=True is not supported"),
        ({"task": "tasks.add", "shedule": 30}, "unknown key 'shedule'; did you mean 'schedule'"),
        ({"task": "tasks.add"}, "no 'schedule' key"),
        (
            {"task": "tasks.add", "schedule": 30, "options": {"queeu": "x"}},
            "unknown option 'queeu'; did you mean 'queue'",
        ),
        ({"task": "tasks.add", "schedule": object()}, "must be seconds, a timedelta, a crontab"),
        ("tasks.add", "expected a dict"),
    ],
)
def test_build_schedules_errors_name_the_schedule(entry: object, message: str) -> None:
    with pytest.raises(
        ConfigError, match=r"schedule 'refresh-feeds': .*" + message.replace("(", r"\(").replace("*", r"\*")
    ):
        build_schedules({"refresh-feeds": entry}, [], TASKS, "UTC")  # type: ignore[dict-item]


def test_build_schedules_bad_default_zone_and_duplicate_names() -> None:
    with pytest.raises(ConfigError, match="setting 'timezone': unknown time zone"):
        build_schedules({}, [], TASKS, "Nowhere/City")
    twice = Schedule("refresh", "tasks.add", every_s=5)
    with pytest.raises(ConfigError, match="schedule 'refresh' is defined twice"):
        build_schedules({"refresh": {"task": "tasks.add", "schedule": 5}}, [twice], TASKS, "UTC")


# ---- the app ------------------------------------------------------------------------------


def test_periodic_above_task_and_on_a_bare_function() -> None:
    app = GreenQ(
        "t", timezone="Europe/Berlin", beat_schedule={"nightly": {"task": "x.plain", "schedule": "0 3 * * *"}}
    )

    @app.periodic(every=30, options={"queue": "feeds"}, catch_up="all", overlap=False)
    @app.task(queue="http", name="x.refresh")
    def refresh() -> None: ...

    @app.periodic(cron="*/5 9-17 * * mon-fri", tz="Europe/Moscow", name="plain-5min", args=(1,))
    def plain(n: int) -> int:
        return n

    @app.periodic(cron="0 9 * * *")  # no tz: the app's timezone setting
    @app.task(name="x.morning")
    def morning() -> None: ...

    assert refresh.name == "x.refresh" and refresh.options.queue == "http"
    assert "tests.test_schedules.test_periodic_above_task_and_on_a_bare_function.<locals>.plain" in app.tasks
    assert plain.delay is not None  # a Task now
    with pytest.raises(ConfigError, match=r"unknown task 'x.plain'"):
        app.schedules()
    app.config_from_object({"beat_schedule": {"nightly": {"task": "x.refresh", "schedule": "0 3 * * *"}}})
    by_name = {s.name: s for s in app.schedules()}
    assert list(by_name) == ["nightly", "x.refresh", "plain-5min", "x.morning"]
    assert by_name["x.refresh"].every_s == 30 and by_name["x.refresh"].catch_up == "all"
    assert by_name["x.refresh"].overlap is False and by_name["x.refresh"].options == {"queue": "feeds"}
    assert by_name["plain-5min"].describe() == "cron */5 9-17 * * mon-fri (Europe/Moscow)"
    assert by_name["plain-5min"].args == (1,)
    assert by_name["x.morning"].tz == "Europe/Berlin" and by_name["nightly"].tz == "Europe/Berlin"


def test_periodic_errors_at_the_decorated_line() -> None:
    app = GreenQ("t")
    with pytest.raises(ConfigError, match="exactly one of every= and cron="):
        app.periodic(lambda: None)
    with pytest.raises(ConfigError, match=r"schedule 'bad': crontab day_of_week: unknown value 'funday'"):
        app.periodic(cron="0 0 * * funday", name="bad")(app.task(name="x.a")(lambda: None))
    task = app.task(name="x.b")(lambda: None)
    app.periodic(task, every=5)
    with pytest.raises(ConfigError, match=r"schedule 'x.b' is registered twice; pass name="):
        app.periodic(task, every=10)
    with pytest.raises(ConfigError, match="unknown time zone"):
        app.periodic(task, cron="* * * * *", tz="Europe/Atlantis", name="other")


def test_settings_types() -> None:
    with pytest.raises(ConfigError, match=r"setting 'beat_schedule'.*expected a dict"):
        GreenQ("t", beat_schedule=[1])
    with pytest.raises(ConfigError, match=r"setting 'timezone'.*expected str"):
        GreenQ("t", timezone=3)
    conf = GreenQ("t").conf
    assert conf.beat_schedule is None and conf.timezone == "UTC"
