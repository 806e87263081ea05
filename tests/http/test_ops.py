"""Operational endpoints and deployment-facing behaviour: /readyz, /metrics,
CORS origin lists, and forwarded headers from trusted proxies only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import wait_for_watchers

TEXT = {"Content-Type": "text/plain"}


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_count_streams_appends_and_bytes(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    await client.put(server.url("a"), headers=TEXT, content=b"12345")
    await client.post(server.url("a"), headers=TEXT, content=b"678")
    await client.post(server.url("a"), headers=TEXT, content=b"90")
    await client.get(server.url("a"), params={"offset": "-1"})
    response = await client.get(f"{server.base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _metric(text, "ds_trio_streams") == 1
    assert _metric(text, "ds_trio_appends_total") == 2
    assert _metric(text, "ds_trio_bytes_in_total") == 5
    assert _metric(text, "ds_trio_bytes_out_total") == 10
    assert _metric(text, "ds_trio_store_bytes") == 10
    assert 'ds_trio_requests_total{method="POST",status="204"} 2.0' in text


@asynccontextmanager
async def three_waiting_polls(server: RunningServer, client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Three long-polls parked on stream `s` for the block; an append then wakes them."""
    tail = (await client.head(server.url("s"))).headers["stream-next-offset"]

    async def poll() -> None:
        await client.get(server.url("s"), params={"offset": tail, "live": "long-poll"})

    with trio.fail_after(10):
        async with trio.open_nursery() as readers:
            for _ in range(3):
                readers.start_soon(poll)
            await wait_for_watchers(server, "s", 3)
            yield
            await client.post(server.url("s"), headers=TEXT, content=b"wake")


async def test_metrics_show_live_readers_while_they_wait(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s")
    await client.put(server.url("s"), headers=TEXT)
    async with three_waiting_polls(server, client):
        text = (await client.get(f"{server.base_url}/metrics")).text
        assert 'ds_trio_live_readers{mode="long-poll"} 3.0' in text
    text = (await client.get(f"{server.base_url}/metrics")).text
    assert 'ds_trio_live_readers{mode="long-poll"} 0.0' in text


async def test_metrics_count_watchers_and_tasks_at_scrape_time(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s")
    await client.put(server.url("s"), headers=TEXT)
    idle = (await client.get(f"{server.base_url}/metrics")).text
    assert _metric(idle, "ds_trio_watchers") == 0
    idle_tasks = _metric(idle, "ds_trio_tasks")
    assert idle_tasks >= 1
    async with three_waiting_polls(server, client):
        waiting = (await client.get(f"{server.base_url}/metrics")).text
        assert _metric(waiting, "ds_trio_watchers") == 3
        # each waiting poll is at least its client task and its handler
        assert _metric(waiting, "ds_trio_tasks") >= idle_tasks + 6
    done = (await client.get(f"{server.base_url}/metrics")).text
    assert _metric(done, "ds_trio_watchers") == 0
    assert _metric(done, "ds_trio_tasks") < _metric(waiting, "ds_trio_tasks")


@pytest.mark.logs_errors("disk went away")
async def test_readyz_reports_a_store_that_cannot_write(
    nursery: trio.Nursery, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = await start_server(nursery, data_dir=str(tmp_path / "data"))
    assert (await client.get(f"{server.base_url}/readyz")).status_code == 200
    store = server.service.store

    def broken(step: str) -> None:
        raise OSError("disk went away")

    store.fault_hook = broken  # type: ignore[attr-defined]
    response = await client.get(f"{server.base_url}/readyz")
    assert response.status_code == 503 and "not writable" in response.text
    store.fault_hook = None  # type: ignore[attr-defined]
    assert (await client.get(f"{server.base_url}/healthz")).status_code == 200
    text = (await client.get(f"{server.base_url}/metrics")).text
    assert _metric(text, "ds_trio_commit_seconds_count") >= 1


async def test_readyz_is_503_once_shutdown_begins(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery)
    server.service.watchers.close()
    assert (await client.get(f"{server.base_url}/readyz")).status_code == 503


async def test_cors_with_several_origins_names_the_one_that_asked(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, cors_origin="https://a.example, https://b.example")
    await client.put(server.url("s"), headers=TEXT)
    for origin in ("https://a.example", "https://b.example"):
        response = await client.get(server.url("s"), headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == origin
        assert "Origin" in response.headers["vary"]
    stranger = await client.get(server.url("s"), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


async def test_location_believes_forwarded_headers_only_from_trusted_proxies(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "streams.example.com", **TEXT}
    untrusted = await start_server(nursery)
    response = await client.put(untrusted.url("s"), headers=forwarded)
    assert response.headers["location"] == untrusted.url("s")

    trusted = await start_server(nursery, trusted_proxies="127.0.0.0/8")
    response = await client.put(trusted.url("s"), headers=forwarded)
    assert response.headers["location"] == "https://streams.example.com/v1/stream/s"
    plain = await client.put(trusted.url("t"), headers=TEXT)
    assert plain.headers["location"] == trusted.url("t")
