"""Control: operations on tasks already sent (``app.control.revoke``), through state in Redis.

No broadcast round trip to workers: a revocation is a key every worker checks when it reserves
a message, so a worker started later honours it too. Imports: config (a type); the broker and
the app are reached through the ``ControlApp`` Protocol, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from greenq.config import Settings


class RevokeStore(Protocol):
    """The broker call revoking needs (``greenq.broker.redis.RedisBroker.revoke``)."""

    def revoke(self, task_ids: Sequence[str], ttl_s: float, terminate: bool = False) -> None: ...


class ControlApp(Protocol):
    """What Control needs of its app (a ``GreenQ``)."""

    @property
    def conf(self) -> Settings: ...

    @property
    def broker(self) -> RevokeStore: ...


class Control:
    """Remote control through Redis state; no broadcast round trip to workers."""

    def __init__(self, app: ControlApp) -> None:
        self.app = app

    def revoke(self, task_id: str | Sequence[str], terminate: bool = False) -> None:
        """Revoke tasks that have not started: every worker (also one started later) skips them
        and records REVOKED. The revocation lives in Redis for ``result_expires``.

        With ``terminate=True`` a task already running is stopped too and its state is REVOKED:
        in a prefork child (a ``--pool prefork`` worker, or a ``cpu=True`` task in a hybrid
        worker) the child is killed within about 0.1 s; a greenlet gets ``GreenletExit`` within
        about 0.5 s, so its ``finally:`` blocks run. The solo pool cannot stop a running task.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.broker.revoke(ids, self.app.conf.result_expires, terminate)
