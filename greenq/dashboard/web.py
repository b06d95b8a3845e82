"""A request and a response as the dashboard's views see them, without a web framework.
Imports: stdlib, orjson."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

STATUS = {
    200: "200 OK",
    303: "303 See Other",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    503: "503 Service Unavailable",
}


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str  # PATH_INFO: below the mount point
    prefix: str  # SCRIPT_NAME: the mount point, "" at the root
    query: dict[str, list[str]]
    form: dict[str, list[str]] = field(default_factory=dict)
    session: str = ""
    new_session: bool = False

    def arg(self, name: str, default: str = "") -> str:
        """A form field, else a query parameter, stripped."""
        values = self.form.get(name) or self.query.get(name)
        return values[0].strip() if values else default

    def args(self, name: str) -> list[str]:
        """Every non-empty value of a form field (checked boxes)."""
        return [v for v in self.form.get(name, []) if v]


@dataclass
class Response:
    status: int
    body: bytes | Iterable[bytes]
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def html_response(body: str, status: int = 200) -> Response:
    return Response(status, body.encode())


def json_response(data: Any) -> Response:
    return Response(200, orjson.dumps(data, default=str), "application/json")


def redirect(location: str) -> Response:
    """303 after a POST: the browser fetches ``location`` with GET (no resubmit on reload)."""
    return Response(303, b"", "text/plain", [("Location", location)])
