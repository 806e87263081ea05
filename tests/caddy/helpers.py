"""Clients for the sites Caddy serves, and ds_trio's own view of its live readers.

Rule: the only polling is on ds_trio's live-reader gauge (its /metrics, read
directly from the upstream), which announces nothing a test could wait on;
every such loop is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .stack import ProxiedServer

TEXT: Final = {"Content-Type": "text/plain"}
POLL_INTERVAL: Final = 0.01  # seconds, only for the live-reader gauge
REQUEST_TIMEOUT: Final = 15.0  # seconds; httpx's bound on every request here
_LIVE_RE: Final = re.compile(r'^ds_trio_live_readers\{mode="([^"]+)"\} (\S+)$', re.MULTILINE)


@asynccontextmanager
async def public_client(
    server: ProxiedServer, site: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client for one of Caddy's sites and that site's base URL.

    `http`: plain HTTP/1.1. `https`: HTTP/2 over TLS, verified against
    Caddy's internal CA. `lb`: the load-balancer variant (plain HTTP/1.1).
    """
    if site == "https":
        client = httpx.AsyncClient(http2=True, verify=server.ssl_context(), timeout=REQUEST_TIMEOUT)
        base = server.https_url
    else:
        client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
        base = server.lb_url if site == "lb" else server.http_url
    async with client:
        yield client, base


async def live_readers(server: ProxiedServer) -> dict[str, float]:
    """ds_trio's live readers per mode (`long-poll`, `sse`), from its /metrics."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        response = await client.get(f"{server.upstream_url}/metrics")
    response.raise_for_status()
    return {mode: float(value) for mode, value in _LIVE_RE.findall(response.text)}


async def wait_for_live(
    server: ProxiedServer,
    mode: str,
    count: int,
    timeout: float = 10.0,  # noqa: ASYNC109
) -> None:
    """Wait (bounded) until ds_trio has exactly `count` live readers of `mode`."""
    seen: dict[str, float] = {}
    try:
        with trio.fail_after(timeout):
            while True:
                seen = await live_readers(server)
                if seen.get(mode, 0.0) == count:
                    return
                await trio.sleep(POLL_INTERVAL)
    except trio.TooSlowError:
        raise AssertionError(
            f"ds_trio did not reach {count} live {mode} readers in {timeout}s: {seen}"
        ) from None


async def raw_status(base_url: str, target: str, timeout: float = 10.0) -> int:  # noqa: ASYNC109
    """The status of `GET target` sent byte for byte (no client-side path cleanup)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request.encode("latin-1"))
            received = b""
            while b"\r\n" not in received:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                received += chunk
    status_line = received.split(b"\r\n", 1)[0].decode("latin-1")
    return int(status_line.split(" ")[1])
