"""The browser console: a page for trying streams by hand, routed only when `config.console`.

Rules: the console is a development tool. Config refuses it while access
control is on, so nothing it serves asks for credentials; access.py still
names its routes as admin-only, so that they would never be public with
tokens. The page's files are read from the package once, when the app is
built, and looked up by route, never by the request's path. The page talks
to the stream root like any other client; the only thing it gets here
besides its files is the stream listing, which the protocol has no URL for.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Final

from quart_trio import QuartTrio

from ..protocol.errors import StreamGone, StreamNotFound
from .common import body_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart import Response

    from .app import StreamService

__all__ = ["CONSOLE_ENDPOINTS", "CONTENT_SECURITY_POLICY", "MAX_LISTED_STREAMS", "add_routes"]

# Scripts, styles and requests only from this origin; no inline code, no frames, no plugins.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
MAX_LISTED_STREAMS: Final = 1000  # the listing names at most this many streams, first by name
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # the files change with the package; always revalidate
}
# endpoint -> (URL path, file in ds_trio/console/, Content-Type)
_FILES: Final = {
    "console_page": ("/", "index.html", "text/html; charset=utf-8"),
    "console_script": ("/console/app.js", "app.js", "text/javascript; charset=utf-8"),
    "console_style": ("/console/style.css", "style.css", "text/css; charset=utf-8"),
    "console_icon": ("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
}
CONSOLE_ENDPOINTS: Final = frozenset([*_FILES, "console_streams"])


def add_routes(app: QuartTrio, service: StreamService) -> None:
    """Add the console's page, script, style and icon, and `GET /console/streams`."""
    folder = resources.files("ds_trio") / "console"
    for endpoint, (rule, filename, content_type) in _FILES.items():
        body = (folder / filename).read_bytes()
        view = _file_view(body, {**_PAGE_HEADERS, "Content-Type": content_type})
        app.add_url_rule(rule, endpoint, view, methods=["GET", "HEAD"])

    async def console_streams() -> Response:
        """Every live stream (up to MAX_LISTED_STREAMS) with its content type, tail and closure."""
        store = service.store
        now = service.clock()
        names = sorted(await store.stream_names(now))
        listed = []
        for name in names[:MAX_LISTED_STREAMS]:
            try:
                meta = await store.head(name, now)
            except (StreamNotFound, StreamGone):
                continue  # deleted or expired since it was named
            listed.append(
                {
                    "name": name,
                    "content_type": meta.content_type,
                    "tail_offset": meta.tail_offset,
                    "closed": meta.closed,
                }
            )
        document = {
            "stream_root": service.config.stream_root,
            "streams": listed,
            "truncated": len(names) > MAX_LISTED_STREAMS,
        }
        headers = {**_PAGE_HEADERS, "Content-Type": "application/json", "Cache-Control": "no-store"}
        return body_response(200, json.dumps(document).encode(), headers)

    app.add_url_rule(
        "/console/streams", "console_streams", console_streams, methods=["GET", "HEAD"]
    )


def _file_view(body: bytes, headers: dict[str, str]) -> Callable[[], Awaitable[Response]]:
    async def view() -> Response:
        return body_response(200, body, headers)

    return view
