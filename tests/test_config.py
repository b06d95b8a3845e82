"""Settings: precedence, unknown names with suggestions, wrong types, masking."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from greenq import ConfigError, GreenQ
from greenq.config import build_settings, from_env, mask_url

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_design() -> None:
    conf = GreenQ("t").conf
    assert conf.task_default_queue == "default"
    assert conf.worker_prefetch_multiplier == 4
    assert conf.worker_lost_timeout == 10.0
    assert conf.result_expires == 86400.0
    assert conf.max_message_bytes == 1024 * 1024


def test_unknown_setting_in_constructor_suggests_closest() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown setting 'worker_prefech_multiplier'.*"
        r"did you mean 'worker_prefetch_multiplier'\?",
    ):
        GreenQ("t", worker_prefech_multiplier=2)


def test_unknown_setting_in_object_module_and_file(tmp_path: Path) -> None:
    app = GreenQ("t")
    with pytest.raises(ConfigError, match="did you mean 'worker_concurrency'"):
        app.config_from_object({"worker_concurency": 3})
    module = types.ModuleType("cfg")
    module.task_default_queu = "x"
    with pytest.raises(ConfigError, match="did you mean 'task_default_queue'"):
        app.config_from_object(module)
    path = tmp_path / "cfg.py"
    path.write_text("import re\nBIG = 1\nbroker_ulr = 'redis://x'\n")
    with pytest.raises(ConfigError, match="did you mean 'broker_url'"):
        app.config_from_object(str(path))


def test_config_file_modules_functions_and_constants_are_not_settings(tmp_path: Path) -> None:
    path = tmp_path / "cfg.py"
    path.write_text(
        "import re\nLIMIT = 3\ndef router(name, *a, **k):\n    return None\n"
        "task_routes = (router,)\nworker_concurrency = 7\n"
    )
    app = GreenQ("t")
    app.config_from_object(str(path))
    assert app.conf.worker_concurrency == 7
    assert app.conf_origin["worker_concurrency"] == str(path)


def test_wrong_type_names_setting_value_and_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENQ_WORKER_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match=r"'worker_concurrency'.*'lots'.*expected int"):
        GreenQ("t").conf  # noqa: B018
    with pytest.raises(ConfigError, match=r"'task_acks_late'.*expected bool"):
        GreenQ("t", task_acks_late="perhaps")


def test_unknown_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENQ_BROKER_ULR", "redis://x")
    with pytest.raises(ConfigError, match=r"GREENQ_BROKER_ULR.*did you mean 'broker_url'"):
        GreenQ("t").conf  # noqa: B018


def test_precedence_defaults_code_env_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    app = GreenQ("t", worker_concurrency=5, shutdown_timeout=7)
    app.config_from_object({"worker_concurrency": 6, "task_default_queue": "fromcode"})
    assert app.conf.worker_concurrency == 6
    monkeypatch.setenv("GREENQ_WORKER_CONCURRENCY", "8")
    app.override({"task_default_queue": "fromcli"})
    conf, origin = app.conf, app.conf_origin
    assert (conf.worker_concurrency, origin["worker_concurrency"]) == (8, "environment")
    assert (conf.task_default_queue, origin["task_default_queue"]) == ("fromcli", "command line")
    assert (conf.shutdown_timeout, origin["shutdown_timeout"]) == (7.0, "GreenQ(...) arguments")
    assert origin["result_expires"] == "default"
    monkeypatch.setenv("GREENQ_TASK_DEFAULT_QUEUE", "fromenv")
    app._settings = None
    assert app.conf.task_default_queue == "fromcli"


def test_django_style_namespace_reads_only_prefixed_names() -> None:
    settings = types.SimpleNamespace(GREENQ_WORKER_CONCURRENCY=9, DEBUG=True, SECRET_KEY="x")
    app = GreenQ("t")
    app.config_from_object(settings, namespace="GREENQ")
    assert app.conf.worker_concurrency == 9
    with pytest.raises(ConfigError, match="did you mean 'task_routes'"):
        app.config_from_object(types.SimpleNamespace(GREENQ_TASK_ROUTE={}), namespace="GREENQ")


def test_env_parsing_of_lists_bools_and_optional() -> None:
    env = from_env(
        {
            "GREENQ_WORKER_QUEUES": "http, default",
            "GREENQ_TASK_ACKS_LATE": "yes",
            "GREENQ_TASK_TIME_LIMIT": "none",
            "GREENQ_HOME": "/x",
            "OTHER": "1",
        }
    )
    conf, origin = build_settings([("environment", env)])
    assert conf.worker_queues == ["http", "default"]
    assert conf.task_acks_late is True
    assert conf.task_time_limit is None
    assert origin["worker_queues"] == "environment"


def test_mask_url_hides_password_only() -> None:
    assert mask_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def test_greenq_config_command_shows_sources_and_masks_passwords(tmp_path: Path) -> None:
    (tmp_path / "cfgapp.py").write_text(
        "from greenq import GreenQ\napp = GreenQ('x', broker='redis://u:hunter2@127.0.0.1:1/0')\n"
        "app.config_from_object({'worker_concurrency': 3})\n"
    )
    env = {"PATH": "/usr/bin:/bin", "GREENQ_SHUTDOWN_TIMEOUT": "12", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "greenq", "config", "-A", "cfgapp", "--broker", "redis://u:pw2@127.0.0.1:2/0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "hunter2" not in out and "pw2" not in out
    assert re.search(r"broker_url\s+redis://u:\*\*\*@127.0.0.1:2/0\s+\(command line\)", out)
    assert re.search(r"worker_concurrency\s+3\s+\(config dict\)", out)
    assert re.search(r"shutdown_timeout\s+12.0\s+\(environment\)", out)
    assert re.search(r"worker_prefetch_multiplier\s+4\s+\(default\)", out)


def test_bad_config_on_the_command_line_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "cfgapp2.py").write_text("from greenq import GreenQ\napp = GreenQ('x')\n")
    env = {"PATH": "/usr/bin:/bin", "GREENQ_WORKER_PREFECH_MULTIPLIER": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "greenq", "config", "-A", "cfgapp2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "did you mean 'worker_prefetch_multiplier'" in proc.stderr


def test_a_result_backend_other_than_the_broker_is_refused_not_ignored() -> None:
    """Results live on the broker (a chord counts members as their results are written): a
    separate ``result_backend`` would be silently unused, so it is an error naming both."""
    from greenq import GreenQ

    app = GreenQ("x", broker="redis://:secret@127.0.0.1:1/0", result_backend="redis://:pw@127.0.0.1:2/0")
    with pytest.raises(ConfigError, match=r"result_backend.*greenq keeps results on the broker") as caught:
        app.conf  # noqa: B018
    assert "pw" not in str(caught.value)
    same = GreenQ("y", broker="redis://127.0.0.1:1/0", result_backend="redis://127.0.0.1:1/0")
    assert same.conf.result_backend == same.conf.broker_url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("result_expires", "inf"),
        ("worker_lost_timeout", "nan"),
        ("worker_lost_timeout", "-1"),
        ("max_deliveries", -3),
    ],
)
def test_nan_infinite_and_negative_numbers_are_refused_naming_the_setting(name: str, value: object) -> None:
    """Found by the settings fuzzer: such values started a worker that died later with a
    traceback, or never wrote its heartbeat."""
    from greenq.config import build_settings

    with pytest.raises(ConfigError, match=rf"setting '{name}' .* expected a finite number >= 0"):
        build_settings([("environment", {name: value})])
    assert build_settings([("environment", {"worker_cpu_nice": "-2"})])[0].worker_cpu_nice == -2
