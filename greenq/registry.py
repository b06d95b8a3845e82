"""The task registry a ``GreenQ`` app inherits: ``@app.task`` (with Celery's ``base=``),
``app.tasks``, ``autodiscover_tasks`` and ``greenq.shared_task``.

``shared_task`` is for reusable apps that must not import the project's app (Django apps, as in
Celery): the function is registered in every GreenQ app of the process, now and later, and the
returned task sends through the most recently created app (Celery's ``current_app``).
NOTE: the shared-task table and the list of apps are module-level, as Celery's are: a task
module using ``@shared_task`` is imported before, and independently of, any app.
Producer side: imports task, task_options, exceptions; lazily ``greenq.contrib.django``.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any, overload

from greenq.exceptions import ConfigError
from greenq.task import Task as BaseTask
from greenq.task_options import OPTION_NAMES, make_options

# name -> (function, options) of every @shared_task, in definition order.
_SHARED: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
_APPS: list[weakref.ref[TaskRegistry]] = []
# Celery task options that greenq refuses on a base class too (the decorator refuses every
# unknown option by itself).
_REFUSED_CLASS_OPTIONS = ("rate_limit", "serializer", "compression", "throws", "reject_on_worker_lost")


def import_related(package: str, related_name: str) -> None:
    """Import ``package.related_name`` if the package has one; a missing package, and any
    error raised inside the module, propagate."""
    module = f"{package}.{related_name}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise


def class_options(base: type[BaseTask], where: str) -> dict[str, Any]:
    """Task options set as class attributes of ``base`` and its bases below ``Task``
    (``class Retrying(app.Task): autoretry_for = (IOError,)``), nearest class first."""
    found: dict[str, Any] = {}
    for klass in base.__mro__:
        if klass is BaseTask or not issubclass(klass, BaseTask):
            continue
        for key, value in vars(klass).items():
            if key in _REFUSED_CLASS_OPTIONS and key not in OPTION_NAMES:
                raise ConfigError(f"{where}: {klass.__name__}.{key} is not supported by greenq")
            if (key in OPTION_NAMES or key == "retry_kwargs") and key != "name":
                found.setdefault(key, value)
    return found


class TaskRegistry:
    """Mixed into ``GreenQ``: the app's tasks by name and the decorators that add to them."""

    # ``app.Task``: the class to subclass for Celery-style handlers (``base=``).
    Task: type[BaseTask] = BaseTask
    _tasks: dict[str, BaseTask]
    _discovery: list[tuple[Sequence[str] | None, str]]
    _discovering: bool
    _shared_count = 0  # how many of _SHARED this app has taken in

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        app = super().__new__(cls)
        _APPS.append(weakref.ref(app))
        return app

    @property
    def tasks(self) -> dict[str, BaseTask]:
        """Registered tasks by name. The first read runs pending ``autodiscover_tasks()``."""
        if self._discovery and not self._discovering:
            self._discover()
        if self._shared_count != len(_SHARED):
            self._take_shared()
        return self._tasks

    def _take_shared(self) -> None:
        for name, (function, options) in list(_SHARED.items()):
            if name not in self._tasks:
                self._tasks[name] = self._make_task(function, {**options, "name": name})
        self._shared_count = len(_SHARED)

    def autodiscover_tasks(
        self, packages: Sequence[str] | None = None, related_name: str = "tasks", force: bool = False
    ) -> None:
        """Import ``<package>.tasks`` from each package, so their ``@app.task`` functions register.

        Lazy, as in Celery: the modules are imported on the first read of ``app.tasks`` (a
        worker's start, a producer's first enqueue), so calling this at the bottom of the module
        that defines the app, before Django has loaded its apps, is fine. ``force=True``
        imports now.

        Args:
            packages: dotted package names; None means every installed Django app
                (``greenq.contrib.django``; Django is then set up with ``django.setup()`` if
                it is not yet, as a worker process needs, from ``DJANGO_SETTINGS_MODULE``).
            related_name: the module to import from each package.

        A package without that module is skipped; an ImportError raised *inside* one is not.

        Raises:
            ConfigError: packages=None and Django is not installed or not configured.
        """
        self._discovery.append((None if packages is None else list(packages), related_name))
        if force:
            self._discover()

    def _discover(self) -> None:
        self._discovering = True
        try:
            while self._discovery:
                packages, related_name = self._discovery[0]
                if packages is None:
                    from greenq.contrib.django import installed_apps

                    packages = installed_apps()
                    if packages is None:
                        return  # Django is loading its apps right now: try again on a later read
                for package in packages:
                    import_related(package, related_name)
                self._discovery.pop(0)
        finally:
            self._discovering = False

    @overload
    def task(self, fn: Callable[..., Any]) -> BaseTask: ...
    @overload
    def task(self, fn: None = None, **options: Any) -> Callable[[Callable[..., Any]], BaseTask]: ...

    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue="http", ...)``;
        ``base=MyTask`` (a subclass of ``app.Task``) builds it from that class.

        Raises:
            ConfigError: an unknown option, a base that is not a Task class, or a second task
                with the same name.
        """

        def register(function: Callable[..., Any]) -> BaseTask:
            task = self._make_task(function, options)
            if task.name in self._tasks:
                raise ConfigError(
                    f"task name {task.name!r} is registered twice "
                    f"(already by {self._tasks[task.name].fn.__module__}); pass name=..."
                )
            self._tasks[task.name] = task
            return task

        return register(fn) if fn is not None else register

    def _make_task(self, function: Callable[..., Any], options: dict[str, Any]) -> BaseTask:
        options = dict(options)
        base = options.pop("base", None) or self.Task
        name = options.get("name") or f"{function.__module__}.{function.__qualname__}"
        if not (isinstance(base, type) and issubclass(base, BaseTask)):
            raise ConfigError(f"task {name}: base={base!r} is not a subclass of app.Task")
        given = {**class_options(base, f"task {name}"), **options}
        return base(self, function, name, make_options(given, f"task {name}"))  # type: ignore[arg-type]


def current_app() -> TaskRegistry:
    """The most recently created app still alive (Celery's ``current_app``).

    Raises:
        ConfigError: no GreenQ app exists in this process.
    """
    while _APPS:
        app = _APPS[-1]()
        if app is not None:
            return app
        _APPS.pop()
    raise ConfigError("a shared task was used before any GreenQ app was created")


class SharedTask(BaseTask):
    """What ``@shared_task`` returns: a task that sends through ``current_app()``. Workers run
    each app's own copy (so ``self`` in a ``bind=True`` task is that app's task)."""

    @property
    def app(self) -> Any:
        return current_app()

    @app.setter
    def app(self, value: Any) -> None:
        """Ignored: the app is whichever is current when the task is used."""


@overload
def shared_task(fn: Callable[..., Any]) -> BaseTask: ...
@overload
def shared_task(fn: None = None, **options: Any) -> Callable[[Callable[..., Any]], BaseTask]: ...


def shared_task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Celery's ``shared_task``: ``@shared_task`` or ``@shared_task(bind=True, max_retries=3)``;
    takes ``@app.task``'s options, ``base=`` included.

    Raises:
        ConfigError: an unknown option (checked now, not when an app takes the task in).
    """

    def register(function: Callable[..., Any]) -> BaseTask:
        name = options.get("name") or f"{function.__module__}.{function.__qualname__}"
        checked = {k: v for k, v in options.items() if k != "base"}
        make_options(checked, f"task {name}")  # fail at the decorator, as @app.task does
        _SHARED[name] = (function, dict(options))
        return SharedTask(None, function, name, make_options(checked, f"task {name}"))  # type: ignore[arg-type]

    return register(fn) if fn is not None else register
