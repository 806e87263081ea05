"""Behind Caddy, Location names the public URL the client used (scheme, host
and port of Caddy's site), never the upstream; forged X-Forwarded-* headers
from clients change nothing; the load-balancer variant passes the balancer's
on; and /metrics is never public."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httpx
import pytest

from .helpers import REQUEST_TIMEOUT, TEXT, public_client, raw_status

if TYPE_CHECKING:
    from .stack import ProxiedServer

FORGED: Final = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher"}


@pytest.mark.parametrize("site", ["http", "https"])
async def test_location_names_the_public_url(proxied: ProxiedServer, site: str) -> None:
    async with public_client(proxied, site) as (client, base):
        for name in (f"loc-{site}", f"dir%2Floc-{site}", f"%C3%A9t%C3%A9-{site}"):
            response = await client.put(f"{base}/v1/stream/{name}", headers=TEXT)
            assert response.status_code == 201
            assert response.headers["location"] == f"{base}/v1/stream/{name}"

        forged = await client.put(f"{base}/v1/stream/forged-{site}", headers={**TEXT, **FORGED})
        assert forged.status_code == 201
        assert forged.headers["location"] == f"{base}/v1/stream/forged-{site}"


@pytest.mark.parametrize("site", ["http", "https"])
async def test_subscription_urls_name_the_public_url(proxied: ProxiedServer, site: str) -> None:
    """A webhook subscription's JWKS URL (like its callback URL) is absolute too."""
    async with public_client(proxied, site) as (client, base):
        body = {
            "type": "webhook",
            "pattern": "nothing-matches/*",  # so that nothing is ever delivered
            "webhook": {"url": "http://127.0.0.1:9/hook"},  # loopback http: allowed in dev
        }
        created = await client.put(f"{base}/v1/stream/__ds/subscriptions/sub-{site}", json=body)
        assert created.status_code == 201, created.text
        signing = created.json()["webhook"]["signing"]
        assert signing["jwks_url"] == f"{base}/v1/stream/__ds/jwks.json"
        jwks = await client.get(signing["jwks_url"])
        assert jwks.status_code == 200
        assert jwks.headers["content-type"] == "application/jwk-set+json"


async def test_directly_location_names_the_upstream(proxied: ProxiedServer) -> None:
    """The contrast: without a proxy's headers ds_trio names its own address."""
    url = f"{proxied.upstream_url}/v1/stream/direct"
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        response = await client.put(url, headers=TEXT)
    assert (response.status_code, response.headers["location"]) == (201, url)


async def test_behind_a_load_balancer_location_names_the_balancer_url(
    proxied: ProxiedServer,
) -> None:
    """The `:4437` variant trusts the balancer (here: this loopback client)."""
    async with public_client(proxied, "lb") as (client, base):
        balanced = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "streams.example.test"}
        response = await client.put(f"{base}/v1/stream/lb", headers={**TEXT, **balanced})
        assert response.status_code == 201
        assert response.headers["location"] == "https://streams.example.test/v1/stream/lb"

        plain = await client.put(f"{base}/v1/stream/lb-plain", headers=TEXT)
        assert plain.headers["location"] == f"{base}/v1/stream/lb-plain"


@pytest.mark.parametrize("site", ["http", "https", "lb"])
async def test_only_streams_and_health_checks_are_public(proxied: ProxiedServer, site: str) -> None:
    async with public_client(proxied, site) as (client, base):
        assert (await client.get(f"{base}/healthz")).text == "ok\n"
        assert (await client.get(f"{base}/readyz")).text == "ready\n"
        for path in ("/metrics", "/", "/v1/other", "/healthz/x"):
            assert (await client.get(f"{base}{path}")).status_code == 404, path
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        direct = await client.get(f"{proxied.upstream_url}/metrics")
    assert direct.status_code == 200
    assert "ds_trio_requests_total" in direct.text


@pytest.mark.parametrize(
    "target",
    [
        "/metrics",
        "//metrics",
        "/v1/stream/../metrics",
        "/v1/stream/x/../../../metrics",
        "/v1/stream/%2e%2e/metrics",
        "/healthz/../metrics",
        "/readyz/..%2Fmetrics",
        "/metrics/../v1/stream/x",
        "/metrics?x=/v1/stream/y",
        "/METRICS",
    ],
)
async def test_no_spelling_of_the_metrics_path_gets_through(
    proxied: ProxiedServer, target: str
) -> None:
    assert await raw_status(proxied.http_url, target) == 404
