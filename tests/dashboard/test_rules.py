"""The dashboard's rules that need no server: the bind policy, auth parsing, CSRF tokens, signed
notices and escaping."""

from __future__ import annotations

import base64

import pytest

from greenq.dashboard.markup import Html, html, url
from greenq.dashboard.security import Guard, check_bind, parse_auth
from greenq.exceptions import ConfigError


def test_bind_policy() -> None:
    for local in ("127.0.0.1", "localhost", "::1"):
        assert check_bind(local, None, False) is None
    assert check_bind("0.0.0.0", ("a", "b"), False) is None
    with pytest.raises(ConfigError, match=r"refusing to serve the dashboard on 0\.0\.0\.0"):
        check_bind("0.0.0.0", None, False)
    with pytest.raises(ConfigError, match="refusing"):
        check_bind("127.0.0.2", None, False)
    assert "WARNING" in (check_bind("10.0.0.5", None, True) or "")
    with pytest.raises(ConfigError, match="contradict"):
        check_bind("0.0.0.0", ("a", "b"), True)


def test_auth_parsing() -> None:
    assert parse_auth(None) is None and parse_auth("") is None
    assert parse_auth("ops:pa:ss") == ("ops", "pa:ss")
    for bad in ("ops", "ops:", ":secret"):
        with pytest.raises(ConfigError, match="USER:PASSWORD"):
            parse_auth(bad)


def test_basic_auth_and_csrf_tokens() -> None:
    guard = Guard(("ops", "secret"))

    def header(text: str) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(text.encode()).decode()}

    assert guard.authorised(header("ops:secret"))
    assert not guard.authorised(header("ops:Secret"))
    assert not guard.authorised({"HTTP_AUTHORIZATION": "Basic !!!"})
    assert not guard.authorised({})
    assert Guard(None).authorised({})
    session = guard.new_session()
    token = guard.token(session)
    assert guard.valid_token(session, token)
    assert not guard.valid_token(guard.new_session(), token)  # another browser's token
    assert not guard.valid_token(session, token[:-1] + "0" if token[-1] != "0" else token[:-1] + "1")
    assert not guard.valid_token(None, token) and not guard.valid_token(session, None)
    assert not Guard(None).valid_token(session, token)  # another process's secret
    environ = {"HTTP_COOKIE": f"other=1; greenq_dashboard={session}"}
    assert Guard.session(environ) == session
    assert Guard.session({"HTTP_COOKIE": "greenq_dashboard=short"}) is None


def test_notices_are_signed() -> None:
    guard = Guard(None)
    signed = guard.sign("purged 3 waiting messages from <x>")
    assert guard.unsign(signed) == "purged 3 waiting messages from <x>"
    _, _, mac = signed.rpartition(".")
    forged = base64.urlsafe_b64encode(b"your session expired: log in at evil.example").decode()
    assert guard.unsign(f"{forged}.{mac}") is None
    assert guard.unsign("garbage") is None and guard.unsign(None) is None


def test_values_are_escaped_unless_marked() -> None:
    page = html("<td>{}</td><td>{}</td>", "<script>x</script>", Html("<b>ok</b>"))
    assert page == "<td>&lt;script&gt;x&lt;/script&gt;</td><td><b>ok</b></td>"
    assert html('<a href="{}">', '" onclick="x') == '<a href="&quot; onclick=&quot;x">'
    assert url("/ops", "/queues/a b", after="1-0", empty="") == "/ops/queues/a%20b?after=1-0"
