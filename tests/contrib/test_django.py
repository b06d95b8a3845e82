"""greenq.contrib.django against a real Django (sqlite, and a PostgreSQL server the test starts
itself, tests/contrib/pg_server.py) and a real ``greenq worker`` whose tasks read the same database.

Django is configured once per test process from ``tests/contrib/django_app/settings.py``; the
worker configures itself from the same module (``-A tests.contrib.django_app.greenq_app``), with
the database locations passed in the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
import redis
from django.core.management import call_command
from django.db import connections, transaction
from django.test.utils import override_settings

from greenq import ConfigError, EncodeError, GreenQ
from greenq.broker.keys import Keys
from greenq.results import PENDING
from tests.contrib.pg_server import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.contrib.django_app.greenq_app"
QUEUE = "django"  # GREENQ_TASK_DEFAULT_QUEUE in the Django settings


def _postgres_schema(dsn: str) -> str:
    """A fresh schema in database ``test`` for this process."""
    import psycopg

    schema = f"greenq_test_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


@pytest.fixture(scope="module")
def dj(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """Django set up in this process, migrated; yields the test app's modules and worker env."""
    server = PostgresServer()
    schema = _postgres_schema(server.dsn)
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.contrib.django_app.settings",
        "DJANGO_TEST_SQLITE": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "DJANGO_TEST_PG": schema,
        "DJANGO_TEST_PG_PORT": str(server.port),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    django.setup()
    for alias in connections:
        call_command("migrate", database=alias, verbosity=0)
    from tests.contrib.django_app import greenq_app, models, tasks

    yield types.SimpleNamespace(
        env=env, app=greenq_app.app, tasks=tasks, Order=models.Order, pg_dsn=server.dsn
    )
    connections.close_all()
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def app(dj: types.SimpleNamespace, redis_url: str) -> GreenQ:
    dj.app.override({"broker_url": redis_url}, "test")
    return dj.app


@pytest.fixture(params=["default", "pg"], ids=["sqlite", "postgresql"])
def alias(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _worker(start_worker, dj: types.SimpleNamespace):
    # -c 1: tasks run in stream order, so a sentinel sent last finishes last.
    return start_worker("-c", "1", app=APP, env=dj.env)


def _on_commit(task, alias: str, args: tuple):
    """``delay_on_commit`` for the default database; ``apply_async(on_commit=alias)`` for others."""
    if alias == "default":
        return task.delay_on_commit(*args)
    return task.apply_async(args, on_commit=alias)


def _queued(r: redis.Redis) -> int:
    return sum(r.xlen(key) for key in Keys.bands(QUEUE)) + r.zcard(Keys.delayed(QUEUE))


# ---- settings and discovery ------------------------------------------------------------


def test_settings_come_from_django_with_the_greenq_namespace(app: GreenQ, dj: types.SimpleNamespace) -> None:
    assert app.conf.task_default_queue == QUEUE
    assert app.conf_origin["task_default_queue"] == "django.conf:settings"
    message, _ = app.build_message("tests.contrib.django_app.tasks.routed")
    assert message.queue == "routed"  # GREENQ_TASK_ROUTES


def test_unknown_greenq_setting_in_django_settings_names_it_and_suggests(dj: types.SimpleNamespace) -> None:
    probe = GreenQ("probe")
    with (
        override_settings(GREENQ_WORKER_CONCURENCY=4),
        pytest.raises(ConfigError, match=r"unknown setting 'worker_concurency'.*GREENQ_WORKER_CONCURENCY"),
    ):
        probe.config_from_object("django.conf:settings", namespace="GREENQ")
    with (
        override_settings(GREENQ_WORKER_CONCURENCY=4),
        pytest.raises(ConfigError, match=r"did you mean 'worker_concurrency'\?"),
    ):
        probe.config_from_object("django.conf:settings", namespace="GREENQ")
    with (
        override_settings(GREENQ_TASK_DEFAULT_PRIORITY="high"),
        pytest.raises(ConfigError, match="expected int"),
    ):
        probe.config_from_object("django.conf:settings", namespace="GREENQ")


def test_autodiscover_is_lazy_and_sets_django_up_when_tasks_are_first_needed(
    dj: types.SimpleNamespace, tmp_path: Path
) -> None:
    code = (
        "import sys\n"
        f"from {APP} import app\n"
        "from django.apps import apps\n"
        "print(apps.ready, 'tests.contrib.django_app.tasks' in sys.modules)\n"
        "names = sorted(app.tasks)\n"
        "print(apps.ready, 'tests.contrib.django_app.tasks' in sys.modules)\n"
        "print(','.join(names))\n"
    )
    env = {**os.environ, **dj.env, "DJANGO_TEST_SQLITE": str(tmp_path / "unused.sqlite3")}
    lines = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout.splitlines()
    assert lines[0] == "False False"  # importing the app module imports no tasks, sets nothing up
    assert lines[1] == "True True"  # the first read of app.tasks ran django.setup() and imported tasks.py
    assert lines[2].split(",") == [
        "greenq.starmap",  # the builtin behind Task.chunks (Celery's app.tasks has its builtins too)
        "tests.contrib.django_app.tasks.count_orders",
        "tests.contrib.django_app.tasks.count_run",
        "tests.contrib.django_app.tasks.read_order",
        "tests.contrib.django_app.tasks.routed",
    ]


def test_autodiscover_with_packages_skips_those_without_the_module_and_raises_for_missing_ones() -> None:
    app = GreenQ("probe")
    app.autodiscover_tasks(["tests.apps", "tests.broker"], force=True)  # no tasks.py in either
    assert list(app.tasks) == ["greenq.starmap"]  # the builtin only
    app.autodiscover_tasks(["tests.no_such_package"])
    with pytest.raises(ModuleNotFoundError, match=r"tests\.no_such_package"):
        app.tasks  # noqa: B018
    with pytest.raises(ModuleNotFoundError):  # still pending: it fails again, never silently
        app.tasks  # noqa: B018


# ---- on_commit with a real worker ------------------------------------------------------


def test_enqueued_on_commit_in_a_transaction_that_rolls_back_is_never_sent(
    app: GreenQ, dj: types.SimpleNamespace, alias: str, start_worker, r: redis.Redis
) -> None:
    worker = _worker(start_worker, dj)
    tag = f"rollback-{alias}"
    with pytest.raises(RuntimeError, match="payment declined"), transaction.atomic(using=alias):
        order = dj.Order.objects.using(alias).create(sku="never-committed", quantity=1)
        doomed = _on_commit(dj.tasks.read_order, alias, (order.pk, alias, tag))
        raise RuntimeError("payment declined")
    assert _queued(r) == 0
    assert not dj.Order.objects.using(alias).filter(sku="never-committed").exists()
    sentinel = dj.tasks.count_run.delay(tag)  # same queue, one slot: runs after anything sent before it
    assert sentinel.get(timeout=30) == sentinel.id
    assert r.hgetall(f"runs:{tag}") == {sentinel.id.encode(): b"1"}
    assert doomed.state == PENDING
    assert "read_order" not in worker.output


def test_enqueued_on_commit_runs_once_after_commit_and_sees_the_committed_row(
    app: GreenQ, dj: types.SimpleNamespace, alias: str, start_worker, r: redis.Redis
) -> None:
    _worker(start_worker, dj)
    tag = f"commit-{alias}"
    with transaction.atomic(using=alias):
        order = dj.Order.objects.using(alias).create(sku=f"sku-{alias}", quantity=3)
        result = _on_commit(dj.tasks.read_order, alias, (order.pk, alias, tag))
        # A plain delay() is sent now and runs while the transaction is still open; had
        # read_order been sent too, it would have run first (one slot, stream order) and not
        # found the row: the classic bug.
        probe = dj.tasks.count_run.delay(tag)
        assert probe.get(timeout=30) == probe.id
        assert r.hgetall(f"runs:{tag}") == {probe.id.encode(): b"1"}
        assert _queued(r) == 0
    assert result.get(timeout=30) == {"id": order.pk, "sku": f"sku-{alias}", "quantity": 3}
    sentinel = dj.tasks.count_run.delay(tag)
    sentinel.get(timeout=30)
    assert r.hgetall(f"runs:{tag}") == {
        probe.id.encode(): b"1",
        result.id.encode(): b"1",
        sentinel.id.encode(): b"1",
    }


def test_a_rolled_back_savepoint_drops_only_its_own_tasks(
    app: GreenQ, dj: types.SimpleNamespace, alias: str, start_worker, r: redis.Redis
) -> None:
    _worker(start_worker, dj)
    tag = f"savepoint-{alias}"
    with transaction.atomic(using=alias):
        kept = dj.Order.objects.using(alias).create(sku="kept", quantity=1)
        kept_result = _on_commit(dj.tasks.read_order, alias, (kept.pk, alias, tag))
        with pytest.raises(ValueError), transaction.atomic(using=alias):
            dropped = dj.Order.objects.using(alias).create(sku="dropped", quantity=2)
            dropped_result = _on_commit(dj.tasks.read_order, alias, (dropped.pk, alias, tag))
            raise ValueError("inner block fails")
    assert kept_result.get(timeout=30)["sku"] == "kept"
    dj.tasks.count_run.delay(tag).get(timeout=30)
    runs = r.hgetall(f"runs:{tag}")
    assert runs[kept_result.id.encode()] == b"1" and dropped_result.id.encode() not in runs
    assert dropped_result.state == PENDING


def test_close_db_connections_keeps_a_gevent_worker_within_its_concurrency(
    app: GreenQ, dj: types.SimpleNamespace, start_worker
) -> None:
    import psycopg

    start_worker("-c", "20", app=APP, env=dj.env)
    for _ in range(3):  # each task runs in a new greenlet, with a new connection
        results = dj.tasks.count_orders.map([("pg",)] * 100)
        assert all(isinstance(res.get(timeout=60), int) for res in results)
    with psycopg.connect(dj.pg_dsn, autocommit=True) as conn:
        (open_now,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [dj.env["DJANGO_TEST_PG"]]
        ).fetchone()
    assert open_now <= 20 + 1  # at most the worker's slots, plus this test process's own


def test_on_commit_outside_a_transaction_sends_at_once(app: GreenQ, dj: types.SimpleNamespace, r) -> None:
    result = dj.tasks.count_run.delay_on_commit("autocommit")
    assert _queued(r) == 1
    assert result.state == PENDING


def test_on_commit_map_and_bad_arguments_raise_inside_the_transaction(
    app: GreenQ, dj: types.SimpleNamespace, r: redis.Redis
) -> None:
    with transaction.atomic():
        results = dj.tasks.count_run.map([("a",), ("b",)], on_commit=True)
        with pytest.raises(EncodeError, match=r"args\[0\]"):
            dj.tasks.count_run.delay_on_commit(object())
        assert _queued(r) == 0
    assert _queued(r) == 2 and len({res.id for res in results}) == 2


def test_on_commit_without_django_installed_says_how_to_install_it(redis_url: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['django'] = None  # as if Django were not installed\n"
        "from greenq import GreenQ, ConfigError\n"
        f"app = GreenQ('p', broker={redis_url!r})\n"
        "@app.task\n"
        "def f(x): return x\n"
        "f.delay(1)\n"
        "try:\n"
        "    f.delay_on_commit(1)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == (
        "on_commit=True / delay_on_commit() needs Django, which is not installed: "
        "pip install 'greenq[django]'"
    )


# ---- the example project ---------------------------------------------------------------


def test_the_django_shop_example_confirms_an_order_through_a_worker(
    tmp_path: Path, redis_url: str, start_worker
) -> None:
    """examples/django_shop as its README runs it (migrate, a POST, a worker), in a copy."""
    project = tmp_path / "django_shop"
    shutil.copytree(ROOT / "examples" / "django_shop", project, ignore=shutil.ignore_patterns("db.sqlite3"))
    project_env = {"PYTHONPATH": str(project), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    env = {**os.environ, **project_env, "GREENQ_BROKER_URL": redis_url}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=project, env=env, check=True, timeout=60
    )
    start_worker(app="shop.greenq_app", env=project_env)
    code = (
        "import django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'shop.settings')\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "from shop.greenq_app import app\n"
        "from orders.models import Order\n"
        "response = Client(HTTP_HOST='127.0.0.1').post('/', {'item': 'lamp', 'quantity': 2})\n"
        "print(app.AsyncResult(response['X-Task-Id']).get(timeout=30))\n"
        "print(Order.objects.get().status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["confirmed", "confirmed"]
