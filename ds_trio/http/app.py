"""The Quart-Trio application: routing, error rendering, CORS and security headers.

Every `ProtocolError` becomes a response here and nowhere else: its status,
its headers, and a short text body.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio
from prometheus_client import Counter
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..config import Config
from ..live import StreamWatchers
from ..protocol.errors import BadRequest, MethodNotAllowed, ProtocolError, StreamNotFound
from ..protocol.paths import RESERVED_PREFIX, canonical_stream_name
from ..store.base import Store
from ..metrics import Metrics
from ..subscriptions import SubscriptionManager
from . import console, ops, reads, streams, subscriptions, websocket
from .access import Access, build_access, check_request
from .common import current, header, list_header, text_response
from .exchange import end_response_after_request
from .forward import Forwarding

__all__ = ["StreamService", "create_app"]

log = logging.getLogger("ds_trio.http")

STREAM_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
_ROUTED_METHODS: Final = [*STREAM_METHODS, "PATCH", "TRACE", "CONNECT", "PROPFIND", "MKCOL"]
_EXPOSED_HEADERS: Final = ", ".join(
    [
        "Content-Type",
        "ETag",
        "Location",
        "Stream-Next-Offset",
        "Stream-Cursor",
        "Stream-Up-To-Date",
        "Stream-Closed",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-Sse-Data-Encoding",
        "Producer-Epoch",
        "Producer-Seq",
        "Producer-Expected-Seq",
        "Producer-Received-Seq",
    ]
)
_ALLOWED_HEADERS: Final = ", ".join(
    [
        "Content-Type",
        "Authorization",
        "If-None-Match",
        "Stream-TTL",
        "Stream-Expires-At",
        "Stream-Seq",
        "Stream-Closed",
        "Stream-Forked-From",
        "Stream-Fork-Offset",
        "Stream-Fork-Sub-Offset",
        "Producer-Id",
        "Producer-Epoch",
        "Producer-Seq",
    ]
)


def _jitter() -> int:
    return random.randint(1, 3600)


@dataclass(slots=True)
class StreamService:
    """What the routes need: settings, the store, the watchers, time and chance."""

    config: Config
    store: Store
    watchers: StreamWatchers
    clock: Callable[[], float] = field(default=time.time)  # wall-clock Unix seconds
    jitter: Callable[[], int] = field(default=_jitter)  # cursor jitter, 1..3600 s
    metrics: Metrics = field(default_factory=Metrics)
    bound_urls: list[str] = field(default_factory=list)  # set once the server listens
    subscriptions: SubscriptionManager | None = None  # None: the __ds APIs answer 404
    forwarding: Forwarding | None = None  # with several workers: how to reach the leader
    peer_events: Callable[[str, str], None] | None = None  # subscription events for the leader
    compress_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(2))
    access: Access | None = None  # None: built from the config (tokens, keys, limits)

    def __post_init__(self) -> None:
        if self.access is None:
            self.access = build_access(self.config)

    def stream_name(self) -> str:
        """The canonical stream name of the current request.

        Raises:
            StreamNotFound: the path is outside the stream root.
            BadRequest: the name is malformed.
        """
        served = current()
        raw_path = served.scope.get("raw_path") or served.path.encode()
        # HTTP/1.1 (h11) only lets ASCII targets through; over HTTP/2 a raw
        # UTF-8 path must name the same stream as its percent-encoding.
        try:
            path = raw_path.decode("utf-8").split("?", 1)[0]
        except UnicodeDecodeError as exc:
            raise BadRequest("stream path is not valid UTF-8") from exc
        prefix = self.config.stream_root + "/"
        if not path.startswith(prefix):
            raise StreamNotFound("not a stream URL")
        name = canonical_stream_name(path[len(prefix) :])
        if name.split("/", 1)[0] == RESERVED_PREFIX:
            raise StreamNotFound(f"{RESERVED_PREFIX}/ is reserved for server APIs")
        return name


def create_app(service: StreamService) -> QuartTrio:
    """The ASGI application serving streams under `service.config.stream_root`."""
    config = service.config
    app = QuartTrio(__name__)
    app.config.update(
        RESPONSE_TIMEOUT=None,  # live reads bound their own duration
        BODY_TIMEOUT=config.body_timeout,
        MAX_CONTENT_LENGTH=config.max_append_bytes,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions["ds_trio"] = service

    handlers = {
        "GET": reads.handle_get,
        "HEAD": streams.handle_head,
        "POST": streams.handle_post,
        "PUT": streams.handle_put,
        "DELETE": streams.handle_delete,
    }

    async def stream_route(name: str = "") -> Response:
        if request.method == "OPTIONS":
            return _preflight()
        handler = handlers.get(request.method)
        if handler is None:
            raise MethodNotAllowed(
                f"method {request.method} is not allowed",
                {"Allow": ", ".join(STREAM_METHODS)},
            )
        return await handler(service, service.stream_name())

    root = config.stream_root
    subscriptions.add_routes(app, service)  # the more specific rule wins over <path:name>
    app.add_url_rule(f"{root}/<path:name>", "stream", stream_route, methods=_ROUTED_METHODS)

    async def stream_websocket(name: str = "") -> None:
        await websocket.handle_websocket(service, service.stream_name())

    app.add_websocket(f"{root}/<path:name>", "stream_ws", stream_websocket)  # live=ws

    ops.add_routes(app, service)
    if config.console:  # development only: Config refuses it with access control on
        console.add_routes(app, service)

    @app.before_request
    async def check_access() -> None:
        await check_request(service)

    @app.before_websocket
    async def check_websocket_access() -> None:
        await check_request(service)

    @app.errorhandler(ProtocolError)
    async def protocol_error(error: ProtocolError) -> Response:
        return text_response(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers: dict[str, str] = {}
        if status == 405:  # Allow names what this resource supports (/healthz: GET, HEAD)
            valid = getattr(error, "valid_methods", None) or STREAM_METHODS
            headers["Allow"] = ", ".join(m for m in STREAM_METHODS if m in valid)
        if status == 413:
            return text_response(413, f"request body exceeds {config.max_append_bytes} bytes")
        return text_response(status, error.name.lower(), headers)

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return text_response(500, "internal server error")

    allowed_origins = {o.strip() for o in config.cors_origin.split(",") if o.strip()}
    common_headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("Cross-Origin-Resource-Policy", "cross-origin"),
        ("Access-Control-Expose-Headers", _EXPOSED_HEADERS),
    ]
    if "*" in allowed_origins:
        common_headers.append(("Access-Control-Allow-Origin", "*"))

    @functools.lru_cache(maxsize=256)
    def request_counter(method: str, status: int) -> Counter:
        return service.metrics.requests.labels(method, str(status))

    @app.after_request
    async def add_common_headers(response: Response) -> Response:
        headers = response.headers
        headers.extend(common_headers)
        if "*" not in allowed_origins:  # one origin is always named; of several, the one that asked
            origin = header("Origin")
            if len(allowed_origins) == 1:
                headers["Access-Control-Allow-Origin"] = next(iter(allowed_origins))
            elif origin in allowed_origins:
                headers["Access-Control-Allow-Origin"] = origin
            vary = headers.get("Vary")
            headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        request_counter(current().method, response.status_code).inc()
        return response

    @app.after_websocket
    async def add_refusal_headers(response: Response | None) -> Response | None:
        # A refused handshake is answered with `response`; an accepted one has none.
        return None if response is None else await add_common_headers(response)

    wrapped = end_response_after_request(app.asgi_app, config.body_timeout, config.send_timeout)
    app.asgi_app = wrapped  # type: ignore[method-assign]
    return app


def _preflight() -> Response:
    response = Response("", status=204)
    response.headers["Access-Control-Allow-Methods"] = ", ".join(STREAM_METHODS)
    requested = list_header("Access-Control-Request-Headers")
    response.headers["Access-Control-Allow-Headers"] = requested or _ALLOWED_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
    response.headers["Allow"] = ", ".join(STREAM_METHODS)
    return response
