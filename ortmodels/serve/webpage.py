"""The page at ``/``: plain HTML, one JS module and a stylesheet shipped in ``serve/page/``.

No build step and nothing fetched from elsewhere: the files are package data, served as they
are under a Content-Security-Policy that lets the page load and call only this server, so
a model's answer or a server message can never run as code (the page also sets them as
text, never as HTML).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi.responses import Response

from .errors import ApiError

CONTENT_SECURITY_POLICY = ("default-src 'self'; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'; object-src 'none'")

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@cache
def _read(name: str) -> bytes:
    return files(__package__).joinpath("page", name).read_bytes()


def page_file(name: str) -> Response:
    """One of the page's files (a fixed list: no path from the request reaches the disk)."""
    if name not in _TYPES:
        raise ApiError(404, f"The page has no file {name!r}; it has {', '.join(sorted(_TYPES))}.",
                       code="not_found")
    return Response(_read(name), media_type=_TYPES[name], headers={
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })
