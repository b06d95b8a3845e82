"""HTML that is escaped unless it says otherwise: ``Html`` marks trusted markup, ``html()`` fills a
template with escaped values, and the small builders the pages share (tables, forms, links).

Everything shown comes from Redis — task arguments, results, tracebacks, queue and worker names —
and any of it may hold ``<script>``: a page is built only from ``Html`` pieces, and a plain ``str``
is escaped wherever it meets one. Imports: stdlib only.
"""

from __future__ import annotations

import datetime
import html as _html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode


class Html(str):
    """Markup that is already safe: never escaped again."""

    __slots__ = ()


def escape(value: Any) -> Html:
    """``value`` as safe text: ``Html`` as it is, None as ``-``, anything else escaped."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("-")
    return Html(_html.escape(str(value), quote=True))


def html(template: str, *values: Any, **named: Any) -> Html:
    """``template`` (trusted: a literal in this package) with every value escaped."""
    return Html(template.format(*map(escape, values), **{k: escape(v) for k, v in named.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(escape(p) for p in parts))


def url(prefix: str, path: str, **query: Any) -> str:
    """An absolute path under the mount prefix, with the query's non-empty values."""
    params = {k: v for k, v in query.items() if v not in (None, "", False)}
    encoded = "/".join(quote(part, safe="@:") for part in path.split("/"))
    return prefix + encoded + ("?" + urlencode(params, doseq=True) if params else "")


def link(href: str, text: Any, cls: str = "") -> Html:
    return html('<a href="{}" class="{}">{}</a>', href, cls, text)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", body_id: str = "") -> Html:
    """A table; each cell is escaped unless it is ``Html``. ``body_id`` names the tbody for live
    updates from the page's script."""
    head = join(html("<th>{}</th>", h) for h in headers)
    body = join(html("<tr>{}</tr>", join(html("<td>{}</td>", c) for c in row)) for row in rows)
    return html(
        '<table class="{}"><thead><tr>{}</tr></thead><tbody id="{}">{}</tbody></table>',
        cls,
        head,
        body_id,
        body,
    )


def hidden(fields: dict[str, Any]) -> Html:
    """Hidden inputs; a list value gives one input per item (``ids``)."""
    return join(
        html('<input type="hidden" name="{}" value="{}">', name, item)
        for name, value in fields.items()
        for item in (value if isinstance(value, list) else [value])
    )


def post_form(action: str, csrf: str, fields: dict[str, Any], button: str, cls: str = "danger") -> Html:
    """A one-button POST form carrying the CSRF token (every mutation is one)."""
    return html(
        '<form method="post" action="{}" class="inline">{}'
        '<button class="{}" type="submit">{}</button></form>',
        action,
        hidden({"csrf": csrf, **fields}),
        cls,
        button,
    )


def when(epoch_s: float | None) -> str:
    """``2024-05-01 12:00:03`` (UTC) for an epoch time; ``-`` for None."""
    if not epoch_s:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(float(epoch_s), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError, TypeError):  # not a time: show what it is
        return str(epoch_s)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def pretty(value: Any) -> str:
    """JSON as an operator reads it (indented; anything else as text)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else escape(value)
