"""SSRF protection for webhook URLs (spec 6.2, 12.8).

Rules: `https` only, except plain `http` to `localhost` or a literal
127.0.0.x when loopback is allowed (development). Every address a host name
resolves to must be public: private, loopback, link-local (including cloud
metadata at 169.254.169.254), multicast, reserved and unspecified addresses
are refused, as are numeric host spellings other than dotted quads (`127.1`,
`0x7f000001`). The check runs at creation and again before every delivery,
so a name re-pointed at a private address later is still refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlsplit

import httpx
import trio

from .errors import WebhookUrlRejected

__all__ = ["Resolver", "check_url_shape", "is_public_address", "system_resolver", "validate_webhook_url"]

Resolver = Callable[[str, int], Awaitable[list[str]]]  # host, port → addresses
_NUMERIC_LABEL: Final = re.compile(r"\d+|0x[0-9a-f]*", re.IGNORECASE)
_LOCAL_NAMES: Final = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: IpAddress) -> bool:
    """Whether a webhook may be delivered to `address`."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url_shape(url: str, *, allow_http_loopback: bool) -> tuple[str, int, IpAddress | None]:
    """The host, port and literal address (if any) of an acceptable URL.

    Raises:
        WebhookUrlRejected: wrong scheme, credentials, a local or private
            literal, or a numeric host that is not a dotted quad.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)  # what delivery will send to: refuse what it cannot send
    except (ValueError, httpx.InvalidURL):
        raise WebhookUrlRejected("webhook url is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookUrlRejected("webhook url must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRejected("webhook url must not carry credentials")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if parts.scheme == "http":
        loopback = host == "localhost" or (
            isinstance(literal, ipaddress.IPv4Address) and literal in _LOOPBACK_HTTP
        )
        if not (allow_http_loopback and loopback):
            raise WebhookUrlRejected("webhook url must use https")
        return host, port, literal
    if literal is not None:
        if not is_public_address(literal):
            raise WebhookUrlRejected(f"webhook url points at a non-public address {literal}")
        return host, port, literal
    last_label = host.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last_label):  # 127.1, 2130706433, 0x7f000001
        raise WebhookUrlRejected("webhook url uses a numeric host that is not a dotted quad")
    if host in _LOCAL_NAMES or host.endswith(".localhost") or host.endswith(".local"):
        raise WebhookUrlRejected("webhook url points at a local name")
    return host, port, None


_LOOPBACK_HTTP: Final = ipaddress.ip_network("127.0.0.0/24")


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, via trio's getaddrinfo."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def validate_webhook_url(
    url: str, *, allow_http_loopback: bool, resolver: Resolver = system_resolver
) -> None:
    """Accept `url` only if it is safe to POST to now.

    Raises:
        WebhookUrlRejected: see the module rules; also when the name does not resolve.
    """
    host, port, literal = check_url_shape(url, allow_http_loopback=allow_http_loopback)
    if literal is not None or urlsplit(url).scheme == "http":
        return
    try:
        addresses = await resolver(host, port)
    except OSError:
        raise WebhookUrlRejected(f"webhook host {host} does not resolve") from None
    if not addresses:
        raise WebhookUrlRejected(f"webhook host {host} does not resolve")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise WebhookUrlRejected(f"webhook host {host} resolves to {text!r}") from None
        if not is_public_address(address):
            raise WebhookUrlRejected(f"webhook host {host} resolves to a non-public address")
