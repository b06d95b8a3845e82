"""``select.poll`` whose zero-timeout check asks the kernel directly instead of the hub.

gevent's ``poll.poll(0)`` starts an io watcher per fd and waits on a zero timer: a trip through
the hub, with every other ready greenlet run first, to answer a question one ``poll(2)`` system
call answers without blocking. redis-py asks it before every command (``can_read`` on a pooled
connection) and urllib3 before reusing a connection (``is_connection_dropped``), so a task body
doing one Redis command or one HTTP request paid a hub round trip extra (docs/pools.md has the
figures). A positive or absent timeout still waits cooperatively, as gevent's does.

Differs from gevent: a loop spinning on ``poll(0)`` no longer yields to other greenlets at each
turn (a loop that spins burns its CPU under either; the pool's hub watchdog names it).
"""

from __future__ import annotations

import select
from typing import Any

_DEFAULT_MASK = select.POLLIN | select.POLLPRI | select.POLLOUT


def install() -> None:
    """Replace the (gevent-patched) ``select.poll``; after ``monkey.patch_all()``. Idempotent."""
    from gevent import monkey
    from gevent import select as green_select

    if getattr(select.poll, "_greenq", False) or select.poll is not getattr(green_select, "poll", None):
        return  # already ours, or select is not patched by gevent (nothing to speed up)
    kernel_poll = monkey.get_original("select", "poll")

    class poll(green_select.poll):  # type: ignore[misc]
        """gevent's poll, with ``poll(0)`` answered by a kernel poll object kept in step."""

        _greenq = True

        def __init__(self) -> None:
            super().__init__()
            self._kernel = kernel_poll()

        def register(self, fd: Any, eventmask: int = _DEFAULT_MASK) -> None:
            super().register(fd, eventmask)
            self._kernel.register(fd, eventmask)

        def modify(self, fd: Any, eventmask: int) -> None:
            super().modify(fd, eventmask)
            self._kernel.modify(fd, eventmask)

        def unregister(self, fd: Any) -> None:
            super().unregister(fd)
            self._kernel.unregister(fd)

        def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
            if timeout == 0:
                return self._kernel.poll(0)
            return super().poll(timeout)

    select.poll = poll  # type: ignore[misc]
