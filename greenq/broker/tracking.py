"""Changes: Redis tells an idle worker when a key its maintenance link read has changed, so that
it asks about its delayed sets and queue controls when they change (and when the soonest delayed
message is due), not ten times a second.

Redis client-side caching (``CLIENT TRACKING ON REDIRECT <id>``, Redis 6+): Redis remembers the
keys a tracked connection reads, scripts' reads included, and when one is written it sends the
key's name once to the connection ``<id>``, subscribed to ``__redis__:invalidate``; the key is
tracked again by the next read. Reads of absent keys are tracked too, so the first delayed
message of a queue is seen as well. The subscriber here is a connection of its own in a thread
of its own, blocked on its socket: an idle worker costs nothing while nothing changes.

Tracking is trusted only while both connections are the ones it was set up on: the subscriber's
reconnection gives it a new id and the link's a fresh connection (``Link.generation``), and
either sends the maintenance loop back to its 100 ms polling until tracking is set up again and
the keys have been read once more (what changed in between is then seen by that read). Not on
Redis Cluster (a subscriber per node; polling there), nor where the ACL refuses ``CLIENT`` or
``SUBSCRIBE`` (polling, with one warning). Imports: broker.sentinel, broker.stack, exceptions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions

from greenq.broker.sentinel import connection_pool
from greenq.broker.stack import NETWORK_ERRORS, Link, reason
from greenq.config import mask_url
from greenq.exceptions import BrokerError, BrokerUnavailable

CHANNEL = "__redis__:invalidate"
WATCHED = (b"}:delayed", b"}:flow")  # the keys whose changes wake the loop (broker.keys names them)
PING_EVERY_S = 5.0  # a quiet subscriber checks its connection this often
RETRY_MAX_S = 5.0

logger = logging.getLogger(__name__)


class Changes:
    """A subscriber to the invalidations of the keys ``link`` reads, calling ``on_change`` for
    each; ``track`` (on the link owner's thread) sets tracking up, ``trusted`` says whether the
    link's reads since are covered."""

    def __init__(self, link: Link, on_change: Callable[[], None]) -> None:
        self.link = link
        self.on_change = on_change
        self.changed = True  # something may have changed since the keys were last read
        self.failed: str | None = "not started" if not link.cluster else "not on Redis Cluster"
        self._redirect: int | None = None  # the subscriber's client id, while subscribed
        self._tracked: tuple[int, int] | None = None  # (redirect, link generation) set up
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    def start(self, stopping: threading.Event) -> None:
        """Start the subscriber thread (once; never on a cluster)."""
        if self.link.cluster or self._thread is not None:
            return
        self.failed = None
        self._thread = threading.Thread(
            target=self._listen, args=(stopping,), name="invalidations", daemon=True
        )
        self._thread.start()

    def track(self) -> bool:
        """Before reading the keys: (re)enable tracking on the link if it or the subscriber has
        reconnected since, and clear ``changed`` (before the read: a change during it counts).
        True if tracking was set up anew or a change was told: every watched key is to be read."""
        changed, self.changed = self.changed, False
        redirect = self._redirect
        if self.failed is not None or redirect is None:
            return changed
        if self._tracked == (redirect, self.link.generation):
            return changed
        try:
            self.link.call("CLIENT", "TRACKING", "ON", "REDIRECT", redirect)
        except BrokerUnavailable:
            raise  # the maintenance loop's back-off; set up again once connected
        except BrokerError as exc:  # an ACL without CLIENT, a Redis before 6
            self._give_up(f"CLIENT TRACKING refused: {exc}")
            return True
        self._tracked = (redirect, self.link.generation)
        return True

    def live(self) -> bool:
        """Does tracking hold on the link's connection, and does the subscriber listen?"""
        redirect = self._redirect
        return (
            self.failed is None and redirect is not None and self._tracked == (redirect, self.link.generation)
        )

    def is_changed(self) -> bool:
        return self.changed

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()

    def _give_up(self, why: str) -> None:
        if self.failed is None:
            logger.warning(
                "%s; polling delayed messages and queue controls every 100 ms instead "
                "(docs/keyspace.md, 'Many queues')",
                why,
            )
        self.failed = why

    def _changed(self) -> None:
        self.changed = True
        self.on_change()

    def _listen(self, stopping: threading.Event) -> None:
        delay = 0.25
        while not stopping.is_set() and self.failed is None:
            try:
                self._subscribe_and_read(stopping)
            except redis.exceptions.ResponseError as exc:  # ACL: no SUBSCRIBE or CLIENT ID
                self._give_up(f"subscribing to {CHANNEL} refused: {reason(exc)}")
            except (*NETWORK_ERRORS, BrokerUnavailable) as exc:
                logger.debug("invalidation subscriber lost its connection: %s", exc)
            except Exception:  # closed from another thread as it stops, or a bug: never dies
                if not stopping.is_set():
                    logger.exception("invalidation subscriber failed; reconnecting")
            finally:
                self._redirect = None
                self.close()
            self._changed()  # read again: changes while it was down were not seen
            stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _subscribe_and_read(self, stopping: threading.Event) -> None:
        pool = connection_pool(
            redis.ConnectionPool,
            self.link.url,
            raise_on_move=True,
            socket_connect_timeout=self.link.connect_timeout_s,
            socket_timeout=PING_EVERY_S * 2,
            socket_keepalive=True,
            health_check_interval=0,
            protocol=2,
        )
        conn = self._conn = pool.make_connection()
        conn.send_command("CLIENT", "ID")
        redirect = int(conn.read_response())
        conn.send_command("SUBSCRIBE", CHANNEL)
        conn.read_response()
        self._redirect = redirect
        self._changed()  # the link must set tracking up for this subscriber and read again
        pinged = False
        while not stopping.is_set():
            if not conn.can_read(timeout=PING_EVERY_S):
                if pinged:  # no answer for a whole period: the connection is gone
                    raise BrokerUnavailable(f"{mask_url(self.link.url)}: no answer to PING")
                conn.send_command("PING")
                pinged = True
                continue
            reply = conn.read_response()
            pinged = False
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                keys = reply[2]  # None: the whole database was flushed
                if keys is None or any(key.endswith(WATCHED) for key in keys):
                    self._changed()
