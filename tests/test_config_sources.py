"""config_from_object reads only the attributes it will use: a settings object whose unrelated
attribute raises on access (Django's lazy settings with an empty SECRET_KEY) still configures greenq."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenq import ConfigError, GreenQ

ROOT = Path(__file__).resolve().parent.parent


class Touchy:
    """A settings object whose unrelated attributes raise when read, as lazy settings do."""

    GREENQ_TASK_DEFAULT_QUEUE = "from-namespace"
    task_default_queue = "from-lowercase"

    def __init__(self) -> None:
        self._read: list[str] = []  # public attributes read so far, in order

    def __getattribute__(self, name: str) -> object:
        if not name.startswith("_"):
            object.__getattribute__(self, "_read").append(name)
        return object.__getattribute__(self, name)

    @property
    def SECRET_KEY(self) -> str:
        raise RuntimeError("The SECRET_KEY setting must not be empty.")

    @property
    def DATABASES(self) -> dict[str, object]:
        raise RuntimeError("settings.DATABASES is improperly configured")


def test_namespace_reads_only_prefixed_attributes() -> None:
    settings = Touchy()
    app = GreenQ("t")
    app.config_from_object(settings, namespace="GREENQ")
    assert app.conf.task_default_queue == "from-namespace"
    assert settings._read == ["GREENQ_TASK_DEFAULT_QUEUE"]


def test_namespace_with_trailing_underscore_and_a_misspelled_prefixed_name() -> None:
    settings = Touchy()
    app = GreenQ("t")
    app.config_from_object(settings, namespace="GREENQ_")
    assert app.conf.task_default_queue == "from-namespace"

    class Typo(Touchy):
        GREENQ_TASK_DEFAULT_QUEU = "x"

    with pytest.raises(ConfigError, match="did you mean 'task_default_queue'"):
        GreenQ("t").config_from_object(Typo(), namespace="GREENQ")


def test_without_namespace_uppercase_constants_are_not_read() -> None:
    """UPPERCASE attributes are constants, never settings: they are skipped before being read."""
    settings = Touchy()
    app = GreenQ("t")
    app.config_from_object(settings)
    assert app.conf.task_default_queue == "from-lowercase"
    assert not [name for name in settings._read if name != name.lower()]


def test_django_settings_with_an_empty_secret_key(tmp_path: Path) -> None:
    """A real Django settings object, in a fresh interpreter (Django's settings are process-wide)."""
    (tmp_path / "emptykey_settings.py").write_text(
        'SECRET_KEY = ""\nINSTALLED_APPS = []\nGREENQ_TASK_DEFAULT_QUEUE = "django-q"\n'
        'GREENQ_BROKER_URL = "redis://127.0.0.1:1/0"\n'
    )
    code = (
        "import django.conf\n"
        "from greenq import GreenQ\n"
        "try:\n"
        "    django.conf.settings.SECRET_KEY\n"
        "except django.core.exceptions.ImproperlyConfigured:\n"
        "    print('secret key raises')\n"
        "app = GreenQ('dj')\n"
        "app.config_from_object('django.conf:settings', namespace='GREENQ')\n"
        "print(app.conf.task_default_queue, app.conf.broker_url)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "emptykey_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["secret key raises", "django-q redis://127.0.0.1:1/0"]
