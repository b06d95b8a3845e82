"""A real Celery project moved over: the task modules of Celery's own examples (from the
source distribution of the installed celery, fetched with pip, not copied into this repo),
ported by changing only imports, run through a greenq worker. docs/migrating-from-celery.md
says what had to change. Also ``greenq check-celery-config`` on Django-style settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

from greenq import GreenQ

ROOT = Path(__file__).resolve().parent.parent.parent
# The one line of proj/celery.py that is not an import: Celery("proj", broker="amqp://",
# backend="rpc://", include=["proj.tasks"]) plus app.conf.update(result_expires=3600).
PROJ_APP = """from greenq import GreenQ

app = GreenQ("proj", result_expires=3600)
app.autodiscover_tasks(["proj"])
"""


@pytest.fixture(scope="session")
def celery_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ of the installed celery's sdist (pip's cache makes a second download local)."""
    wanted = version("celery")
    where = tmp_path_factory.mktemp("celery-sdist")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-deps", "--no-binary", ":all:", f"celery=={wanted}", "-d", str(where)],
        check=True,
        timeout=300,
    )
    (sdist,) = where.glob("celery-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/examples/" in m.name and m.isfile()]
        archive.extractall(where, members=members, filter="data")
    return where / f"celery-{wanted}" / "examples"


def test_celery_examples_run_on_greenq_with_only_imports_changed(
    celery_examples: Path, tmp_path: Path, redis_url: str, start_worker
) -> None:
    # 1. The first-steps tutorial (examples/tutorial/tasks.py): app and tasks in one module.
    tutorial = (celery_examples / "tutorial" / "tasks.py").read_text()
    ported = tutorial.replace("from celery import Celery", "from greenq import GreenQ as Celery")
    assert ported != tutorial and ported.count("\n") == tutorial.count("\n")
    (tmp_path / "tasks.py").write_text(ported)
    # 2. The next-steps project (examples/next-steps/proj): tasks.py as it is (it imports the app
    # from .celery); celery.py is the app module, written for greenq (PROJ_APP).
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("__init__.py", "tasks.py"):
        (proj / name).write_text((celery_examples / "next-steps" / "proj" / name).read_text())
    assert "from .celery import app" in (proj / "tasks.py").read_text()
    (proj / "celery.py").write_text(PROJ_APP)
    env = {"PYTHONPATH": str(tmp_path)}
    start_worker("-P", "gevent", "-c", "5", app="tasks", env=env)  # broker='amqp://' loses to the env
    start_worker("-P", "prefork", "-c", "1", "-Q", "proj", app="proj.celery", env=env)
    probe = GreenQ("probe", broker=redis_url)
    assert probe.send_task("tasks.add", [2, 3]).get(timeout=30) == 5
    for name, args, expected in (("add", [4, 4], 8), ("mul", [3, 5], 15), ("xsum", [[1, 2, 3]], 6)):
        assert probe.send_task(f"proj.tasks.{name}", args, queue="proj").get(timeout=30) == expected


def test_check_celery_config_on_django_settings(tmp_path: Path) -> None:
    settings = tmp_path / "settings.py"
    settings.write_text(
        "INSTALLED_APPS = ['shop']\n"
        "CELERY_BROKER_URL = 'redis://localhost:6379/0'\n"
        "CELERY_TASK_ACKS_LATE = True\n"
        "CELERY_ACKS_LATE = True\n"
        "CELERY_TASK_SERIALIZER = 'json'\n"
        "CELERY_BROKER_CONNECTION_TIMEOUT = 3\n"
        "CELERY_WORKER_CONCURENCY = 4\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "greenq", "check-celery-config", str(settings)],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    rows = {parts[0]: " ".join(parts[2:]) for parts in lines if len(parts) > 2 and parts[1] == "->"}
    assert rows == {
        "CELERY_BROKER_URL": "broker_url",
        "CELERY_TASK_ACKS_LATE": "task_acks_late",
        "CELERY_ACKS_LATE": "task_acks_late (Celery 3 name CELERY_ACKS_LATE)",
        "CELERY_BROKER_CONNECTION_TIMEOUT": "broker_connect_timeout: seconds to open one connection",
        "CELERY_TASK_SERIALIZER": "greenq sends JSON only, never pickle: drop it",
        "CELERY_WORKER_CONCURENCY": "not a setting greenq knows; did you mean 'worker_concurrency'?",
    }
    assert "INSTALLED_APPS" not in done.stdout
    clean = tmp_path / "clean.py"
    clean.write_text("broker_url = 'redis://localhost/0'\ntask_acks_late = True\n")
    again = subprocess.run(
        [sys.executable, "-m", "greenq", "check-celery-config", str(clean)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "everything maps" in again.stdout
