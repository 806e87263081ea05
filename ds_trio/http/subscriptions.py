"""The reserved `__ds` routes (spec 6, 7): subscriptions, worker actions, the JWKS.

Paths are parsed from the raw request path: the subscription id is the
percent-decoded segment after `subscriptions/`; a membership path after
`streams/` is percent-decoded once (`manual%2Fb` names `manual/b`).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

from quart import Response, request

from ..protocol.errors import (
    MethodNotAllowed,
    PayloadTooLarge,
    ProtocolError,
    StreamGone,
    StreamNotFound,
)
from ..protocol.json_mode import JSON_MEDIA_TYPE
from ..protocol.paths import RESERVED_PREFIX, canonical_stream_name
from ..protocol.streams import AppendRequest
from ..subscriptions import DeliverySettings, Signer, SubscriptionManager
from ..subscriptions.codec import public_view, stream_views
from ..subscriptions.errors import InvalidSubscriptionRequest, SubscriptionError
from .access import check_subscription_scope
from .common import public_base_url
from .forward import forward_to_leader, forwarded_base_url

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from quart_trio import QuartTrio

    from .app import StreamService

__all__ = [
    "APPENDED",
    "DELETED",
    "add_routes",
    "body_path",
    "build_manager",
    "notify_append",
    "notify_delete",
]

log = logging.getLogger("ds_trio.subscriptions")

APPENDED: Final = "A"  # subscription events other workers send the leader
DELETED: Final = "D"
JWKS_MEDIA_TYPE: Final = "application/jwk-set+json"
JWKS_CACHE: Final = "public, max-age=300"
MAX_BODY_BYTES: Final = 1024 * 1024  # subscription API bodies: JSON, parsed on the event loop


def body_path(path: str) -> str:
    """The canonical stream name of a root-relative path given in a JSON body."""
    # A JSON string may hold a lone surrogate: encoded as such, it is then refused as invalid UTF-8.
    segments = (quote(s.encode("utf-8", "surrogatepass"), safe="") for s in path.split("/"))
    return canonical_stream_name("/".join(segments))


class StoreHost:
    """The manager's view of the server: the store, the watchers, the hooks."""

    def __init__(self, service: StreamService) -> None:
        self._service = service

    async def tail_offset(self, path: str) -> str | None:
        try:
            meta = await self._service.store.head(path, self._service.clock())
        except (StreamNotFound, StreamGone):
            return None
        return meta.tail_offset

    async def stream_names(self) -> list[str]:
        return await self._service.store.stream_names(self._service.clock())

    async def append_wake(self, path: str, message: bytes) -> bool:
        service = self._service
        try:
            outcome = await service.store.append(
                path, AppendRequest(JSON_MEDIA_TYPE, (message,)), service.clock()
            )
        except ProtocolError as exc:
            log.warning("cannot write a wake event to %s: %s", path, exc.message)
            return False
        if outcome.changed:
            service.watchers.notify(path)
        await notify_append(service, path)
        return True

    async def load_subscriptions(self) -> dict[str, bytes]:
        return await self._service.store.load_subscriptions()

    async def save_subscription(self, sub_id: str, record: bytes | None) -> None:
        await self._service.store.save_subscription(sub_id, record)


def build_manager(service: StreamService, key: Ed25519PrivateKey) -> SubscriptionManager:
    """The subscription manager for `service`, signing with `key` (see `load_or_create_key`)."""
    config = service.config
    settings = DeliverySettings(
        stream_root=config.stream_root,
        timeout=config.webhook_timeout,
        concurrency=config.webhook_concurrency,
        retry_base=config.webhook_retry_base,
        retry_max=config.webhook_retry_max,
        allow_http_loopback=config.webhook_allow_http_loopback,
    )
    signer = Signer(key)
    return SubscriptionManager(StoreHost(service), signer, settings, body_path, clock=service.clock)


async def notify_append(service: StreamService, name: str) -> None:
    """Tell the subscriptions that `name` has new data (never fails the caller).

    In a worker that does not hold them, the event goes to the worker that does.
    """
    if service.subscriptions is None and service.peer_events is not None:
        service.peer_events(APPENDED, name)
    elif service.subscriptions is not None:
        try:
            await service.subscriptions.on_append(name)
        except ProtocolError as exc:
            log.warning("subscriptions missed an append to %s: %s", name, exc.message)


async def notify_delete(service: StreamService, name: str) -> None:
    """Tell the subscriptions that `name` is gone."""
    if service.subscriptions is None and service.peer_events is not None:
        service.peer_events(DELETED, name)
    elif service.subscriptions is not None:
        try:
            await service.subscriptions.on_delete(name)
        except ProtocolError as exc:
            log.warning("subscriptions missed the deletion of %s: %s", name, exc.message)


def _json(status: int, body: Any) -> Response:
    response = Response(json.dumps(body), status=status)
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


def _no_content() -> Response:
    response = Response(b"", status=204)
    del response.headers["Content-Type"]
    return response


async def _body() -> Any:
    """The request's JSON body, read no further than MAX_BODY_BYTES.

    Raises:
        PayloadTooLarge: the body is longer (413).
        InvalidSubscriptionRequest: it is not JSON.
    """
    too_large = PayloadTooLarge(f"subscription API bodies are at most {MAX_BODY_BYTES} bytes")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    async for chunk in request.body:
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise InvalidSubscriptionRequest("body must be JSON") from None


def _bearer() -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _allow(*methods: str) -> None:
    if request.method not in methods:
        raise MethodNotAllowed(f"method {request.method} is not allowed", {"Allow": ", ".join(methods)})


async def _subscription_route(service: StreamService, sub_id: str, rest: list[str]) -> Response:
    manager = service.subscriptions
    assert manager is not None
    root = service.config.stream_root
    if not rest:
        _allow("GET", "PUT", "DELETE")
        if request.method == "DELETE":
            await manager.delete(sub_id)
            return _no_content()
        if request.method == "GET":
            return _json(200, public_view(manager.get(sub_id), manager.signer.kid, root))
        body = await _body()
        check_subscription_scope(body, body_path)
        base_url = forwarded_base_url(service) or public_base_url(service.config.trusted_proxies)
        created, sub = await manager.put(sub_id, body, base_url)
        return _json(201 if created else 200, public_view(sub, manager.signer.kid, root))
    action = rest[0]
    if action == "streams":
        if len(rest) == 1:
            _allow("POST")
            body = await _body()
            check_subscription_scope(body, body_path)
            await manager.add_streams(sub_id, body.get("streams") if isinstance(body, dict) else None)
        else:
            _allow("DELETE")
            await manager.remove_stream(sub_id, unquote("/".join(rest[1:])))
        return _no_content()
    if len(rest) != 1 or action not in ("callback", "claim", "ack", "release"):
        raise StreamNotFound("no such subscription API")
    _allow("POST")
    body = await _body()
    if action == "claim":
        sub, token = await manager.claim(sub_id, body.get("worker") if isinstance(body, dict) else None)
        assert sub.wake is not None
        return _json(
            200,
            {
                "wake_id": sub.wake.wake_id,
                "generation": sub.generation,
                "token": token,
                "streams": stream_views(sub, dict(sub.wake.snapshot)),
                "lease_ttl_ms": sub.config.lease_ttl_ms,
            },
        )
    if action == "release":
        await manager.release(sub_id, _bearer(), body)
        return _no_content()
    kind = "webhook" if action == "callback" else "pull-wake"
    next_wake = await manager.acknowledge(sub_id, _bearer(), body, kind)
    return _json(200, {"ok": True, "next_wake": next_wake})


def add_routes(app: QuartTrio, service: StreamService) -> None:
    """Route `<stream_root>/__ds/...` ahead of the stream routes."""
    prefix = f"{service.config.stream_root}/{RESERVED_PREFIX}/"

    async def reserved_route(rest: str = "") -> Response:
        raw_path = request.scope.get("raw_path") or request.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        tail = path[len(prefix) :] if path.startswith(prefix) else ""
        if service.subscriptions is None and service.forwarding is not None:
            return await forward_to_leader(service, service.forwarding)  # another worker has them
        if tail == "jwks.json" and service.subscriptions is not None:
            _allow("GET", "HEAD")
            response = Response(json.dumps(service.subscriptions.signer.jwks()), status=200)
            response.headers["Content-Type"] = JWKS_MEDIA_TYPE
            response.headers["Cache-Control"] = JWKS_CACHE
            return response
        parts = tail.split("/")
        if parts[0] != "subscriptions" or len(parts) < 2 or not parts[1] or service.subscriptions is None:
            raise StreamNotFound(f"{RESERVED_PREFIX}/ is reserved for server APIs")
        return await _subscription_route(service, unquote(parts[1]), parts[2:])

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    app.add_url_rule(f"{prefix}<path:rest>", "reserved", reserved_route, methods=methods)

    @app.errorhandler(SubscriptionError)
    async def subscription_error(error: SubscriptionError) -> Response:
        response = Response(error.json_body(), status=error.status)
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return response
