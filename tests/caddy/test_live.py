"""Live reads through Caddy: SSE events and long-poll wakeups arrive unbuffered
(each within 100 ms of its append), and a reader that leaves is released in
ds_trio at once, over plain HTTP/1.1 and over HTTP/2 with TLS.

Latency is measured from just before the append is sent to the moment the
client has parsed the event or the long-poll answer, so it includes the
append's own round trip through Caddy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest
import trio

from ..http.helpers import sse_events
from .helpers import TEXT, public_client, wait_for_live

if TYPE_CHECKING:
    from .stack import ProxiedServer

APPENDS: Final = 10  # measured appends per test
MAX_LATENCY: Final = 0.100  # seconds from an append to the client seeing it
EVENT_TIMEOUT: Final = 5.0  # seconds an awaited event or answer may take at most
LIVE_WAIT: Final = 60.0  # httpx read timeout for responses that wait on purpose
SITES: Final = ["http", "https"]
EXPECTED_VERSION: Final = {"http": "HTTP/1.1", "https": "HTTP/2"}


def _report(kind: str, site: str, latencies: list[float]) -> None:
    shown = ", ".join(f"{1000 * t:.1f}" for t in latencies)
    print(f"\n{kind} via {site}: latency ms [{shown}], max {1000 * max(latencies):.1f}")


@pytest.mark.parametrize("site", SITES)
async def test_sse_events_pass_through_unbuffered(proxied: ProxiedServer, site: str) -> None:
    async with public_client(proxied, site) as (client, base):
        url = f"{base}/v1/stream/sse-latency"
        assert (await client.put(url, headers=TEXT)).status_code == 201
        send, receive = trio.open_memory_channel[tuple[str, float]](APPENDS)
        latencies: list[float] = []

        async def read_events(*, task_status: trio.TaskStatus[str]) -> None:
            params = {"offset": "now", "live": "sse"}
            async with client.stream("GET", url, params=params, timeout=LIVE_WAIT) as response:
                assert response.status_code == 200
                task_status.started(response.http_version)
                async for event in sse_events(response):
                    if event.event == "data":
                        await send.send((event.data, trio.current_time()))

        async with trio.open_nursery() as nursery:
            with trio.fail_after(EVENT_TIMEOUT):
                version = await nursery.start(read_events)
            assert version == EXPECTED_VERSION[site]
            await wait_for_live(proxied, "sse", 1)
            for i in range(APPENDS):
                payload = f"event-{i}"
                sent = trio.current_time()
                response = await client.post(url, content=payload, headers=TEXT)
                assert response.status_code == 204
                with trio.fail_after(EVENT_TIMEOUT):
                    data, seen = await receive.receive()
                assert data == payload
                latencies.append(seen - sent)
            nursery.cancel_scope.cancel()
    _report("SSE", site, latencies)
    assert all(latency < MAX_LATENCY for latency in latencies), latencies


@pytest.mark.parametrize("site", SITES)
async def test_long_poll_wakeups_pass_through_unbuffered(proxied: ProxiedServer, site: str) -> None:
    async with public_client(proxied, site) as (client, base):
        url = f"{base}/v1/stream/long-poll-latency"
        created = await client.put(url, headers=TEXT)
        assert created.status_code == 201
        offset = created.headers["stream-next-offset"]
        latencies: list[float] = []
        for i in range(APPENDS):
            payload = f"wake-{i}"
            answer: dict[str, object] = {}

            async def poll(at: str = offset, into: dict[str, object] = answer) -> None:
                params = {"offset": at, "live": "long-poll"}
                into["response"] = await client.get(url, params=params, timeout=LIVE_WAIT)
                into["seen"] = trio.current_time()

            with trio.fail_after(EVENT_TIMEOUT * 2):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(poll)
                    await wait_for_live(proxied, "long-poll", 1)  # parked in ds_trio
                    sent = trio.current_time()
                    appended = await client.post(url, content=payload, headers=TEXT)
                    assert appended.status_code == 204
            response = answer["response"]
            assert response.status_code == 200, response  # type: ignore[attr-defined]
            assert response.http_version == EXPECTED_VERSION[site]  # type: ignore[attr-defined]
            assert response.text == payload  # type: ignore[attr-defined]
            latencies.append(answer["seen"] - sent)  # type: ignore[operator]
            offset = response.headers["stream-next-offset"]  # type: ignore[attr-defined]
    _report("long-poll", site, latencies)
    assert all(latency < MAX_LATENCY for latency in latencies), latencies


@pytest.mark.parametrize("mode", ["sse", "long-poll"])
@pytest.mark.parametrize("site", SITES)
async def test_readers_that_leave_are_released_in_ds_trio(
    proxied: ProxiedServer, site: str, mode: str
) -> None:
    """Caddy passes a client's departure on: ds_trio stops serving its read at
    once, long before the read would end (long-poll timeout 10 s, SSE 60 s).

    The client leaves by closing its connection, as a closed browser tab
    does (httpx cannot reset a single HTTP/2 stream).
    """
    async with public_client(proxied, site) as (client, base):
        url = f"{base}/v1/stream/leaving-{mode}"
        assert (await client.put(url, headers=TEXT)).status_code == 201

    async def read_and_stay(*, task_status: trio.TaskStatus[None]) -> None:
        async with public_client(proxied, site) as (client, _):
            params = {"offset": "now", "live": mode}
            task_status.started()
            async with client.stream("GET", url, params=params, timeout=LIVE_WAIT) as response:
                async for _ in response.aiter_raw():
                    pass

    async with trio.open_nursery() as nursery:
        await nursery.start(read_and_stay)
        await wait_for_live(proxied, mode, 1)
        nursery.cancel_scope.cancel()  # the client closes its connection
    await wait_for_live(proxied, mode, 0, timeout=EVENT_TIMEOUT)
