"""Forwarding the reserved `__ds` APIs to the worker that owns the subscriptions.

With several workers, one of them (the leader) holds the subscriptions in
memory and delivers them; a request for them that reaches another worker is
sent on to the leader's private loopback address and its answer passed back.
The forwarding worker names the public base URL the client used, and proves
with the leader's secret that the request comes from a worker (a client's own
copies of these headers are replaced); a request that was forwarded once is
never forwarded again (503 while leadership moves).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx
from quart import Response, request

from ..protocol.errors import StorageFailure
from .common import body_response, header, public_base_url

if TYPE_CHECKING:
    from .app import StreamService

__all__ = ["FORWARD_HEADER", "Forwarding", "forward_to_leader", "forwarded_base_url"]

FORWARD_HEADER: Final = "DS-Trio-Forward"  # the leader's secret
BASE_URL_HEADER: Final = "DS-Trio-Base-Url"  # the public base URL the client used
_NOT_FORWARDED: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "host", "content-length", FORWARD_HEADER.lower(), BASE_URL_HEADER.lower(),
    }
)
_NOT_RETURNED: Final = frozenset(
    {
        "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "date", "x-content-type-options", "cross-origin-resource-policy", "vary",
        "access-control-allow-origin", "access-control-expose-headers",
    }
)


class LeaderUnavailable(StorageFailure):
    """No worker can answer for the subscriptions right now (503)."""


@dataclass(slots=True)
class Forwarding:
    """How this worker reaches the leader, and the secret it accepts when it leads."""

    secret: str  # this worker's; published when it becomes the leader
    leader: Callable[[], Awaitable[tuple[str, str] | None]]  # its (private URL, secret), if another
    client: httpx.AsyncClient


def _same_secret(proof: str, secret: str) -> bool:
    """Constant-time comparison of a header's value (any latin-1 text) with a secret."""
    return hmac.compare_digest(proof.encode("utf-8", "replace"), secret.encode("utf-8"))


def forwarded_base_url(service: StreamService) -> str | None:
    """The base URL a worker forwarded this request with, if it proved it is one."""
    forwarding = service.forwarding
    proof = header(FORWARD_HEADER)
    if forwarding is None or proof is None or not _same_secret(proof, forwarding.secret):
        return None
    return header(BASE_URL_HEADER)


async def forward_to_leader(service: StreamService, forwarding: Forwarding) -> Response:
    """Send the current request to the leader and relay its answer."""
    leader = await forwarding.leader()
    if leader is None:
        raise LeaderUnavailable("no worker holds the subscriptions yet; retry", {"Retry-After": "1"})
    url, secret = leader
    proof = header(FORWARD_HEADER)
    if proof is not None and _same_secret(proof, secret):  # sent here by a worker: never twice
        raise LeaderUnavailable("the subscriptions are moving to another worker; retry", {"Retry-After": "1"})
    target = request.scope.get("raw_path") or request.path.encode()
    query = request.scope.get("query_string") or b""
    path = target.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED]
    headers += [
        (FORWARD_HEADER, secret),
        (BASE_URL_HEADER, public_base_url(service.config.trusted_proxies)),
    ]
    body = await request.get_data(cache=False)
    try:
        answer = await forwarding.client.request(request.method, url + path, headers=headers, content=body)
    except httpx.HTTPError as exc:
        raise LeaderUnavailable(
            "the worker holding the subscriptions did not answer; retry", {"Retry-After": "1"}
        ) from exc
    response = body_response(answer.status_code, answer.content, {})
    for name, value in answer.headers.multi_items():
        if name.lower() not in _NOT_RETURNED:
            response.headers.add(name, value)
    return response
