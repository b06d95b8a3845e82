"""The Signal class on its own (a fresh Signal, so nothing stays connected for other tests), and
what ``@app.task(base=...)`` refuses."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from greenq import ConfigError, GreenQ
from greenq.signals import TASK_RUN, ExceptionInfo, Signal, Switch


def test_receivers_get_sender_and_arguments_and_sender_filters_match_tasks_by_name() -> None:
    app = GreenQ("signals", broker="redis://127.0.0.1:1/0")
    add = app.task(lambda a, b: a + b, name="math.add")
    mul = app.task(lambda a, b: a * b, name="math.mul")
    signal = Signal("probe", ("value",))
    seen: list[tuple[str, Any, Any]] = []

    @signal.connect
    def everything(sender: Any, value: int, **kw: Any) -> str:
        seen.append(("all", getattr(sender, "name", sender), value))
        assert kw == {"signal": signal}
        return "ok"

    signal.connect(lambda sender, value, **_: seen.append(("add only", sender, value)), sender=add)
    signal.connect(lambda sender, value, **_: seen.append(("by name", sender, value)), sender="math.mul")
    replies = signal.send(sender=add, value=1)
    signal.send(sender="math.add", value=2)  # a task's name matches a receiver connected with the task
    signal.send(sender=mul, value=3)
    assert seen == [
        ("all", "math.add", 1),
        ("add only", add, 1),
        ("all", "math.add", 2),
        ("add only", "math.add", 2),
        ("all", "math.mul", 3),
        ("by name", mul, 3),
    ]
    assert replies[0] == (everything, "ok")
    assert signal.disconnect(everything) and not signal.disconnect(everything)
    seen.clear()
    signal.send(sender=mul, value=4)
    assert seen == [("by name", mul, 4)]


def test_a_raising_receiver_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal("probe")
    ran = []

    def broken(**_: Any) -> None:
        raise ValueError("receiver bug")

    signal.connect(broken)
    signal.connect(lambda **_: ran.append(1))
    with caplog.at_level(logging.ERROR, logger="greenq.signals"):
        replies = signal.send(sender=None)
    assert ran == [1]
    assert isinstance(replies[0][1], ValueError)
    assert "signal probe: receiver" in caplog.text and "receiver bug" in caplog.text


def test_dispatch_uid_connects_once_weak_is_refused_and_the_switch_follows_receivers() -> None:
    switch = Switch()
    signal = Signal("probe", switch=switch)
    assert not switch.on
    fn = signal.connect(lambda **_: None, dispatch_uid="once")
    signal.connect(lambda **_: None, dispatch_uid="once")
    assert len(signal.receivers) == 1 and switch.on
    signal.disconnect(fn)
    assert not switch.on and not TASK_RUN.on  # nothing in this process listens to task signals
    with pytest.raises(ValueError, match="weak=True"):
        signal.connect(lambda **_: None, weak=True)


def test_exception_info_carries_type_traceback_and_text() -> None:
    try:
        raise KeyError("k")
    except KeyError:
        info = ExceptionInfo()
    assert info.type is KeyError and info.tb is not None
    assert "Traceback" in info.traceback and "KeyError: 'k'" in str(info)


def test_base_must_be_a_task_class_and_unsupported_class_options_raise() -> None:
    app = GreenQ("bases", broker="redis://127.0.0.1:1/0")

    class NotATask:
        pass

    with pytest.raises(ConfigError, match=r"not a subclass of app\.Task"):
        app.task(base=NotATask)(lambda: None)

    class Serialising(app.Task):
        serializer = "pickle"

    with pytest.raises(ConfigError, match=r"Serialising\.serializer is not supported"):
        app.task(base=Serialising, name="s")(lambda: None)

    class Retrying(app.Task):
        autoretry_for = (OSError,)
        max_retries = 7
        retry_kwargs = {"countdown": 2}  # noqa: RUF012 - Celery's spelling

    task = app.task(base=Retrying, name="r", max_retries=2)(lambda: None)
    assert isinstance(task, Retrying) and not task.hooked
    assert task.options.autoretry_for == (OSError,)
    assert task.options.max_retries == 2  # the decorator wins over the class
    assert task.options.default_retry_delay == 2.0
    with pytest.raises(ConfigError, match="retry_kwargs"):
        app.task(name="x", retry_kwargs={"exc": 1})(lambda: None)


def test_the_executor_calls_a_base_classs_own_call_and_binds_self() -> None:
    """A plain task's function is called directly; a base class that overrides ``__call__``
    (Celery's way to wrap every run) and a ``bind=True`` task still go through ``__call__``."""
    import orjson

    from greenq.pools.base import Job
    from greenq.worker.execute import execute

    app = GreenQ("calls", broker="redis://127.0.0.1:1/0")
    wrapped: list[tuple[Any, ...]] = []

    class Wrapping(app.Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            wrapped.append(args)
            return super().__call__(*args, **kwargs) * 10

    plain = app.task(lambda a, b: a + b, name="c.plain")
    around = app.task(base=Wrapping, name="c.around")(lambda a, b: a + b)
    bound = app.task(bind=True, name="c.bound")(lambda self, a: (self.name, self.request.id, a))
    assert plain.body is not None and around.body is None and bound.body is None

    def run(name: str, args: list[Any]) -> Any:
        job = Job(1, name, args, {}, {"id": f"id-{name}", "task": name, "retries": 0})
        outcome = execute(app, job)
        assert outcome.state == "SUCCESS", outcome.error
        return orjson.loads(outcome.payload or b"{}")["result"]

    assert run("c.plain", [1, 2]) == 3
    assert run("c.around", [1, 2]) == 30 and wrapped == [(1, 2)]
    assert run("c.bound", [5]) == ["c.bound", "id-c.bound", 5]
