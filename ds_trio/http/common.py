"""Small helpers shared by the routes: header access and response building."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from quart import Response, has_websocket_context, request, websocket
from quart.wrappers import BaseRequestWebsocket

from ..protocol.errors import BadRequest
from ..protocol.streams import StreamMeta
from .exchange import AFTER_RESPONSE

__all__ = [
    "after_response",
    "body_response",
    "client_address",
    "current",
    "empty_response",
    "header",
    "list_header",
    "meta_headers",
    "public_base_url",
    "single_arg",
    "single_header",
    "text_response",
]


def current() -> BaseRequestWebsocket:
    """What is being served: the HTTP request, or the WebSocket handshake (`live=ws`)."""
    return websocket if has_websocket_context() else request  # type: ignore[return-value]


def single_arg(name: str) -> str | None:
    """The query parameter `name` of what is being served, if given.

    Raises:
        BadRequest: it is given more than once.
    """
    values = current().args.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} given more than once")
    return values[0] if values else None


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _first(value: str | None) -> str | None:
    return value.split(",", 1)[0].strip() or None if value else None


def public_base_url(trusted_proxies: tuple[str, ...]) -> str:
    """`scheme://host` as the client sees this server.

    X-Forwarded-Proto and X-Forwarded-Host count only when the request comes
    from one of `trusted_proxies`; anyone else could forge them.
    """
    base = request.host_url.rstrip("/")
    if not trusted_proxies or not request.remote_addr:
        return base
    try:
        peer = ipaddress.ip_address(request.remote_addr)
    except ValueError:
        return base
    if not any(peer in network for network in _networks(trusted_proxies)):
        return base
    host = _first(list_header("X-Forwarded-Host"))
    scheme = _first(list_header("X-Forwarded-Proto"))
    if host is None and scheme is None:
        return base
    return f"{scheme or request.scheme}://{host or request.host}"


def client_address(trusted_proxies: tuple[str, ...]) -> str | None:
    """The client's IP address: the peer's, or from X-Forwarded-For when the peer is trusted.

    Of a forwarded chain, the nearest address not itself a trusted proxy is
    the client (the ones further left could be forged).
    """
    peer = current().remote_addr
    if not trusted_proxies or not peer:
        return peer
    chain = [peer]
    forwarded = list_header("X-Forwarded-For")
    if forwarded:
        chain = [hop.strip() for hop in forwarded.split(",") if hop.strip()] + chain
    networks = _networks(trusted_proxies)
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop  # not an address: still the best name this client has
        if not any(address in network for network in networks):
            return str(address)
    return chain[0]


def after_response(callback: Callable[[], None]) -> None:
    """Call `callback` once the current request's response is sent (at once outside one)."""
    callbacks = request.scope.get(AFTER_RESPONSE)
    if callbacks is None:
        callback()
    else:
        callbacks.append(callback)


_HEADER_INDEX: Final = "ds_trio.headers"  # scope key: the request's headers by lower-case name


def _header_values(name: str) -> list[str]:
    """Every value of the request header `name`, from an index built once per request."""
    scope = current().scope
    index: dict[str, list[str]] | None = scope.get(_HEADER_INDEX)
    if index is None:
        index = {}
        for raw_name, raw_value in scope["headers"]:
            index.setdefault(raw_name.decode("latin-1").lower(), []).append(
                raw_value.decode("latin-1")
            )
        scope[_HEADER_INDEX] = index
    return index.get(name.lower(), [])


def header(name: str) -> str | None:
    """The first value of the request header `name`, if it was sent."""
    values = _header_values(name)
    return values[0] if values else None


def list_header(name: str) -> str | None:
    """A comma-separated list header, its repeated lines joined (RFC 9110 5.3)."""
    values = _header_values(name)
    return ", ".join(values) if values else None


def single_header(name: str) -> str | None:
    """The value of a header that may appear at most once.

    Raises:
        BadRequest: it appears more than once.
    """
    values = _header_values(name)
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values[0] if values else None


def meta_headers(meta: StreamMeta) -> dict[str, str]:
    """The headers that describe a stream's state on HEAD, PUT and reads."""
    headers = {"Content-Type": meta.content_type, "Stream-Next-Offset": meta.tail_offset}
    if meta.closed:
        headers["Stream-Closed"] = "true"
    return headers


class _PlainResponse(Response):
    """A response with no Content-Type unless its headers give one."""

    default_mimetype = None


def empty_response(status: int, headers: dict[str, str]) -> Response:
    """A bodiless response with exactly `headers` (plus the app's common ones)."""
    return _PlainResponse(b"", status=status, headers=headers)


def body_response(status: int, body: bytes, headers: dict[str, str]) -> Response:
    """A response whose Content-Type is taken verbatim from `headers`."""
    return _PlainResponse(body, status=status, headers=headers)


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A short plain-text response, never cached."""
    response = Response(message + "\n", status=status)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response
