"""Stream lifetimes over real HTTP: delete and re-create, TTL and Expires-At
expiry (driven by a fake wall clock, not by sleeping), and server shutdown.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import trio

from ..conftest import RunningServer, start_server
from .helpers import FakeClock, create_stream, wait_until

TEXT = {"Content-Type": "text/plain"}


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _install_clock(server: RunningServer) -> FakeClock:
    clock = FakeClock(float(int(time.time())))
    server.service.clock = clock
    return clock


async def test_ttl_stream_is_gone_after_it_expires(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    clock = _install_clock(server)
    url = server.url("mayfly")
    await create_stream(client, url, body=b"brief", **{"Stream-TTL": "1"})
    await create_stream(client, server.url("keeper"))
    assert len(server.service.store) == 2
    head = await client.head(url)
    assert head.headers["stream-ttl"] == "1"
    clock.advance(0.9)
    assert (await client.head(url)).status_code == 200
    clock.advance(0.2)  # 1.1 s after creation; HEAD did not extend the TTL
    for method in ("GET", "HEAD", "DELETE"):
        assert (await client.request(method, url)).status_code == 404
    assert (await client.post(url, content=b"x", headers=TEXT)).status_code == 404
    assert len(server.service.store) == 1
    assert (await client.head(server.url("keeper"))).status_code == 200
    # The name is free again.
    await create_stream(client, url, body=b"again", **{"Stream-TTL": "1"})
    assert (await client.get(url, params={"offset": "-1"})).content == b"again"


async def test_reads_and_appends_slide_the_ttl(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    clock = _install_clock(server)
    url = server.url("sliding")
    await create_stream(client, url, **{"Stream-TTL": "10"})
    for _ in range(3):
        clock.advance(8)
        assert (await client.get(url, params={"offset": "-1"})).status_code == 200
    clock.advance(8)
    assert (await client.post(url, content=b"x", headers=TEXT)).status_code == 204
    clock.advance(9)
    assert (await client.head(url)).status_code == 200  # 9 s after the last write
    clock.advance(2)
    assert (await client.head(url)).status_code == 404


async def test_store_expire_removes_expired_streams_without_a_request(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    clock = _install_clock(server)
    await create_stream(client, server.url("a"), **{"Stream-TTL": "1"})
    await create_stream(client, server.url("b"), **{"Stream-TTL": "5"})
    await create_stream(client, server.url("c"))
    store = server.service.store
    assert len(store) == 3
    assert await store.expire(clock.now) == []
    clock.advance(2)
    assert await store.expire(clock.now) == ["a"]
    assert len(store) == 2
    clock.advance(10)
    assert await store.expire(clock.now) == ["b"]
    assert len(store) == 1
    assert (await client.head(server.url("c"))).status_code == 200


async def test_sweeper_removes_expired_streams(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, expiry_sweep_interval="20ms")
    clock = _install_clock(server)
    for name in ("x", "y"):
        await create_stream(client, server.url(name), **{"Stream-TTL": "1"})
    assert len(server.service.store) == 2
    clock.advance(1.5)
    await wait_until(lambda: len(server.service.store) == 0, timeout=5)
    assert (await client.head(server.url("x"))).status_code == 404


async def test_expires_at_is_echoed_and_enforced(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    clock = _install_clock(server)
    url = server.url("dated")
    expires = _rfc3339(clock.now + 60)
    await create_stream(client, url, **{"Stream-Expires-At": expires})
    head = await client.head(url)
    assert head.headers["stream-expires-at"] == expires
    assert "stream-ttl" not in head.headers
    # The same instant in another spelling is the same configuration.
    same = await client.put(
        url, headers={**TEXT, "Stream-Expires-At": expires.replace("Z", "+00:00")}
    )
    assert same.status_code == 200
    later = await client.put(url, headers={**TEXT, "Stream-Expires-At": _rfc3339(clock.now + 61)})
    assert later.status_code == 409
    clock.advance(59)
    assert (
        await client.get(url, params={"offset": "-1"})
    ).status_code == 200  # reads do not extend it
    clock.advance(1)
    assert (await client.head(url)).status_code == 404
    assert len(server.service.store) == 0


async def test_delete_then_recreate_is_a_new_stream(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("phoenix")
    await create_stream(client, url, body=b"first life")
    assert (await client.delete(url)).status_code == 204
    assert (await client.head(url)).status_code == 404
    created = await client.put(url, headers={"Content-Type": "application/json"})
    assert created.status_code == 201
    response = await client.get(url, params={"offset": "-1"})
    assert response.content == b"[]"
    assert response.headers["content-type"] == "application/json"


async def test_shutdown_is_prompt_and_closes_the_store(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # `client` keeps its connection alive after the PUT. Idle connections are
    # closed at once on shutdown; they must not hold it for the grace period.
    # (Regression: the keep-alive timer was never restarted after a response,
    # so idle connections lingered until the grace period ran out.)
    server = await start_server(nursery, shutdown_grace="20s")
    await create_stream(client, server.url("s"), body=b"x")
    assert len(server.service.store) == 1
    server.stop.set()
    with trio.fail_after(2):
        await wait_until(lambda: len(server.service.store) == 0)  # aclose ran: serve returned
    async with httpx.AsyncClient(timeout=2) as fresh:
        try:
            await fresh.get(f"{server.base_url}/healthz")
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the server still accepts connections after shutdown")


async def test_healthz(server: RunningServer, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{server.base_url}/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert (await client.head(f"{server.base_url}/healthz")).status_code == 200
