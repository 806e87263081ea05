"""SSRF protection: which webhook URLs are refused (table-driven, DNS names included)."""

from __future__ import annotations

import httpx
import pytest

from ds_trio.subscriptions.errors import WebhookUrlRejected
from ds_trio.subscriptions.urls import validate_webhook_url

from ..conftest import RunningServer
from .helpers import sub_url

# A fake DNS: names → addresses; anything else does not resolve.
DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "dual.example.com": ["93.184.216.34", "10.1.2.3"],  # one private answer is enough to refuse
    "internal.example.com": ["192.168.1.10"],
    "metadata.example.com": ["169.254.169.254"],
    "loop.example.com": ["127.0.0.1"],
    "v6loop.example.com": ["::1"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "v6public.example.com": ["2606:4700:4700::1111"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    try:
        return DNS[host]
    except KeyError:
        raise OSError(f"no such host {host}") from None


ACCEPTED = [
    "https://hooks.example.com/hook",
    "https://v6public.example.com/hook",
    "https://93.184.216.34/hook",
    "http://127.0.0.1:8080/webhook",
    "http://127.0.0.9/webhook",
    "http://localhost:9000/hook",
]
REJECTED = [
    "http://10.0.0.1/hook",  # http is only for loopback
    "http://hooks.example.com/hook",
    "http://127.0.1.1/hook",  # outside 127.0.0.x
    "ftp://hooks.example.com/hook",
    "https://10.0.0.1/hook",
    "https://172.16.5.4/hook",
    "https://192.168.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://127.0.0.1/hook",
    "https://0.0.0.0/hook",
    "https://[::1]/hook",
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://localhost/hook",
    "https://LOCALHOST./hook",
    "https://foo.localhost/hook",
    "https://127.1/hook",  # numeric spellings of loopback
    "https://2130706433/hook",
    "https://0x7f000001/hook",
    "https://internal.example.com/hook",  # names resolving to private addresses
    "https://metadata.example.com/hook",
    "https://loop.example.com/hook",
    "https://v6loop.example.com/hook",
    "https://mapped.example.com/hook",
    "https://dual.example.com/hook",
    "https://unknown.example.com/hook",  # does not resolve
    "https://user:pw@hooks.example.com/hook",
    "not a url",
]


@pytest.mark.parametrize("url", ACCEPTED)
async def test_accepted(url: str) -> None:
    await validate_webhook_url(url, allow_http_loopback=True, resolver=fake_resolver)


@pytest.mark.parametrize("url", REJECTED)
async def test_rejected(url: str) -> None:
    with pytest.raises(WebhookUrlRejected):
        await validate_webhook_url(url, allow_http_loopback=True, resolver=fake_resolver)


async def test_http_loopback_can_be_turned_off() -> None:
    with pytest.raises(WebhookUrlRejected):
        await validate_webhook_url("http://127.0.0.1/x", allow_http_loopback=False, resolver=fake_resolver)


@pytest.mark.parametrize("url", ["http://10.0.0.1/hook", "https://internal.example.com/hook"])
async def test_rejected_over_http_before_anything_is_stored(
    server: RunningServer, client: httpx.AsyncClient, url: str
) -> None:
    assert server.service.subscriptions is not None
    server.service.subscriptions.resolver = fake_resolver
    body = {"type": "webhook", "pattern": "a/*", "webhook": {"url": url}}
    response = await client.put(sub_url(server, "ssrf"), json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    assert (await client.get(sub_url(server, "ssrf"))).status_code == 404
