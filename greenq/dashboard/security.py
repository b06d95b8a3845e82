"""What keeps the dashboard safe to expose: HTTP Basic auth, CSRF tokens on every mutation,
the bind policy (nothing beyond localhost without a password or an explicit ``--no-auth``),
and the response headers that keep a page from running anything it did not ship.

The dashboard can purge queues and requeue dead letters, so a POST must come from one of its
own pages: each browser gets a random session cookie (``SameSite=Strict``, ``HttpOnly``) and
every form carries ``HMAC(secret, session)``; the server recomputes it. Imports: exceptions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from http.cookies import SimpleCookie
from typing import Any

from greenq.exceptions import ConfigError

SESSION_COOKIE = "greenq_dashboard"
LOCAL_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})
AUTH_ENV = "GREENQ_DASHBOARD_AUTH"
# No inline script or style, no other origin: an argument that slipped past escaping still
# could not run. frame-ancestors: the purge button cannot be clickjacked from another site.
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:password`` -> (user, password); None or empty -> None.

    Raises:
        ConfigError: no colon, or an empty user or password.
    """
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("dashboard auth must be USER:PASSWORD (both non-empty)")
    return user, password


def check_bind(bind: str, auth: tuple[str, str] | None, no_auth: bool) -> str | None:
    """Refuse a bind beyond localhost without auth; return the warning ``--no-auth`` earns.

    Raises:
        ConfigError: bind address not local, no auth and no ``--no-auth``; or both given.
    """
    if auth and no_auth:
        raise ConfigError("--auth and --no-auth contradict each other; give one")
    if bind in LOCAL_ADDRESSES or auth:
        return None
    if not no_auth:
        raise ConfigError(
            f"refusing to serve the dashboard on {bind} without a password: anyone who reaches it "
            f"could purge queues; give --auth USER:PASSWORD (or {AUTH_ENV}), or --no-auth if a "
            "proxy in front authenticates"
        )
    return (
        f"WARNING: the dashboard on {bind} has no authentication (--no-auth): anyone who can "
        "reach this port can purge queues and requeue dead letters"
    )


class Guard:
    """Basic auth and CSRF for one dashboard app."""

    def __init__(self, auth: tuple[str, str] | None, secret: bytes | None = None) -> None:
        self.auth = auth
        self.secret = secret or os.urandom(32)

    def authorised(self, environ: dict[str, Any]) -> bool:
        if self.auth is None:
            return True
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # Both compared, always: the time taken says nothing about which one was wrong.
        ok_user = hmac.compare_digest(user.encode(), self.auth[0].encode())
        ok_password = hmac.compare_digest(password.encode(), self.auth[1].encode())
        return ok_user and ok_password

    @staticmethod
    def session(environ: dict[str, Any]) -> str | None:
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # a malformed Cookie header is a browser without a session
            return None
        morsel = cookie.get(SESSION_COOKIE)
        return morsel.value if morsel and len(morsel.value) == 43 else None

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)  # 43 characters

    @staticmethod
    def cookie_header(session: str, path: str) -> tuple[str, str]:
        return (
            "Set-Cookie",
            f"{SESSION_COOKIE}={session}; Path={path or '/'}; HttpOnly; SameSite=Strict",
        )

    def token(self, session: str) -> str:
        return hmac.new(self.secret, session.encode(), hashlib.sha256).hexdigest()

    def valid_token(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token(session), token)

    def sign(self, notice: str) -> str:
        """A notice for the page an action redirects to; signed, so that a link from elsewhere
        cannot make the dashboard say something it did not."""
        body = base64.urlsafe_b64encode(notice.encode()).decode()
        return body + "." + hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:20]

    def unsign(self, value: str | None) -> str | None:
        body, _, mac = (value or "").rpartition(".")
        expected = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:20]
        if not body or not hmac.compare_digest(mac, expected):
            return None
        try:
            return base64.urlsafe_b64decode(body.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
