"""Live reads over real HTTP: fan-out, release on delete/shutdown, disconnects.

Readers are counted on the server (`StreamWatchers.statistics`) before the
test acts, so nothing here sleeps in place of an event.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import (
    RawConnection,
    SseEvent,
    create_stream,
    read_sse,
    recording_client,
    sse_events,
    wait_for_no_watchers,
    wait_for_watchers,
)

if TYPE_CHECKING:
    import httpx

FAN_OUT = 500  # readers of each kind in the fan-out test
FAN_OUT_CLIENTS = 20  # httpx clients the fan-out readers are spread over
PER_WAVE = 50  # readers of each kind that connect at once (see below)
LONG_WAIT = 60.0  # httpx read timeout for readers that wait on purpose


async def test_one_append_reaches_500_long_poll_and_500_sse_readers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s")
    url = server.url("fan-out")
    created = await create_stream(client, url, body=b"before")
    tail = created.headers["stream-next-offset"]
    long_poll_results: list[httpx.Response] = []
    sse_results: list[list[SseEvent]] = []

    async def long_poll_reader(client: httpx.AsyncClient) -> None:
        params = {"offset": tail, "live": "long-poll"}
        long_poll_results.append(await client.get(url, params=params, timeout=LONG_WAIT))

    delivered = 0
    all_delivered = trio.Event()

    async def sse_reader(client: httpx.AsyncClient) -> None:
        nonlocal delivered
        params = {"offset": tail, "live": "sse"}
        async with client.stream("GET", url, params=params, timeout=LONG_WAIT) as response:
            assert response.status_code == 200
            events: list[SseEvent] = []
            async for event in sse_events(response):
                events.append(event)
                if len(events) == 3:  # opening control, the append's data, its control
                    delivered += 1
                    if delivered == FAN_OUT:
                        all_delivered.set()
            sse_results.append(events)

    with trio.fail_after(25):
        async with AsyncExitStack() as stack, trio.open_nursery() as readers:
            clients = [
                await stack.enter_async_context(recording_client(max_connections=FAN_OUT))
                for _ in range(FAN_OUT_CLIENTS)
            ]
            # Connect in waves of 2 * PER_WAVE, Hypercorn's listen backlog (100):
            # a burst of a thousand SYNs overflows it, and the kernel's SYN
            # retries (1 s, 3 s, 7 s...) would dominate the run time.
            for n in range(FAN_OUT):
                readers.start_soon(long_poll_reader, clients[n % FAN_OUT_CLIENTS])
                readers.start_soon(sse_reader, clients[n % FAN_OUT_CLIENTS])
                if (n + 1) % PER_WAVE == 0:
                    await wait_for_watchers(server, "fan-out", 2 * (n + 1), timeout=10)
            await wait_for_watchers(server, "fan-out", 2 * FAN_OUT, timeout=10)
            assert long_poll_results == []  # nobody timed out or failed early
            append = await client.post(
                url, content=b"hello", headers={"Content-Type": "text/plain"}
            )
            assert append.status_code == 204
            await all_delivered.wait()
            # Closing the stream ends every event stream, so each reader reads
            # its response to the end and disconnects cleanly.
            close = await client.post(url, headers={"Stream-Closed": "true"})
            assert close.status_code == 204
        new_tail = append.headers["stream-next-offset"]

        assert len(long_poll_results) == FAN_OUT
        for response in long_poll_results:
            assert response.status_code == 200
            assert response.content == b"hello"
            assert response.headers["stream-next-offset"] == new_tail
            assert response.headers["stream-up-to-date"] == "true"
            assert "stream-cursor" in response.headers

        assert len(sse_results) == FAN_OUT
        for events in sse_results:
            kinds = [e.event for e in events]
            assert kinds == ["control", "data", "control", "control"], events
            assert events[1].data == "hello"
            control = json.loads(events[2].data)
            assert control["streamNextOffset"] == new_tail
            assert control["upToDate"] is True
            assert json.loads(events[3].data)["streamClosed"] is True

        await wait_for_no_watchers(server, timeout=10)
        assert server.service.watchers.statistics().total == 0


async def _start_long_poll(
    client: httpx.AsyncClient, url: str, offset: str, into: list[httpx.Response]
) -> None:
    into.append(
        await client.get(url, params={"offset": offset, "live": "long-poll"}, timeout=LONG_WAIT)
    )


async def _start_sse(
    client: httpx.AsyncClient, url: str, offset: str, into: list[list[SseEvent]]
) -> None:
    async with client.stream(
        "GET", url, params={"offset": offset, "live": "sse"}, timeout=LONG_WAIT
    ) as response:
        assert response.status_code == 200
        into.append(await read_sse(response))


async def test_delete_releases_live_readers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s", sse_reconnect_interval="30s")
    url = server.url("doomed")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    polls: list[httpx.Response] = []
    sses: list[list[SseEvent]] = []
    with trio.fail_after(8):
        async with trio.open_nursery() as readers:
            for _ in range(3):
                readers.start_soon(_start_long_poll, client, url, tail, polls)
                readers.start_soon(_start_sse, client, url, tail, sses)
            await wait_for_watchers(server, "doomed", 6)
            assert (await client.delete(url)).status_code == 204
        await wait_for_no_watchers(server)
    assert [r.status_code for r in polls] == [404] * 3
    for response in polls:
        assert response.headers["content-type"].startswith("text/plain")
    # Each SSE reader saw its opening control event, then the stream simply ended.
    assert [[e.event for e in events] for events in sses] == [["control"]] * 3


async def test_expiry_releases_live_readers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(
        nursery, long_poll_timeout="30s", sse_reconnect_interval="30s", expiry_sweep_interval="20ms"
    )
    now = [time.time()]
    server.service.clock = lambda: now[0]
    url = server.url("mayfly")
    tail = (await create_stream(client, url, **{"Stream-TTL": "5"})).headers["stream-next-offset"]
    polls: list[httpx.Response] = []
    sses: list[list[SseEvent]] = []
    with trio.fail_after(8):
        async with trio.open_nursery() as readers:
            readers.start_soon(_start_long_poll, client, url, tail, polls)
            readers.start_soon(_start_sse, client, url, tail, sses)
            await wait_for_watchers(server, "mayfly", 2)
            now[0] += 6  # past the TTL: the sweeper removes it and wakes the readers
        await wait_for_no_watchers(server)
    assert [r.status_code for r in polls] == [404]
    assert [[e.event for e in events] for events in sses] == [["control"]]
    assert len(server.service.store) == 0


async def test_shutdown_releases_live_readers_promptly(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # A long grace period: readers must be released by the shutdown itself,
    # not by Hypercorn cancelling them when the grace runs out.
    server = await start_server(
        nursery, long_poll_timeout="30s", sse_reconnect_interval="30s", shutdown_grace="20s"
    )
    url = server.url("until-shutdown")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    polls: list[httpx.Response] = []
    sses: list[list[SseEvent]] = []
    async with trio.open_nursery() as readers:
        for _ in range(3):
            readers.start_soon(_start_long_poll, client, url, tail, polls)
            readers.start_soon(_start_sse, client, url, tail, sses)
        await wait_for_watchers(server, "until-shutdown", 6)
        started = trio.current_time()
        server.stop.set()
        with trio.fail_after(2):
            await wait_for_no_watchers(server)
    assert trio.current_time() - started < 2
    assert [r.status_code for r in polls] == [204] * 3
    for response in polls:
        assert response.headers["stream-up-to-date"] == "true"
        assert response.headers["stream-next-offset"] == tail
    assert [[e.event for e in events] for events in sses] == [["control"]] * 3


async def _wait_then_cancel(
    server: RunningServer, name: str, count: int, scope: trio.CancelScope
) -> None:
    await wait_for_watchers(server, name, count)
    scope.cancel()


async def test_cancelled_long_poll_leaves_no_watcher(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s")
    url = server.url("impatient")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    with trio.fail_after(8):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as readers:
                for _ in range(5):
                    readers.start_soon(_start_long_poll, client, url, tail, [])
                readers.start_soon(_wait_then_cancel, server, "impatient", 5, scope)
        assert scope.cancelled_caught
        await wait_for_no_watchers(server)
    # The stream still works for the next reader.
    await client.post(url, content=b"later", headers={"Content-Type": "text/plain"})
    with trio.fail_after(5):
        response = await client.get(url, params={"offset": tail, "live": "long-poll"})
    assert response.status_code == 200
    assert response.content == b"later"


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_client_dropping_the_connection_leaves_no_watcher(
    nursery: trio.Nursery, client: httpx.AsyncClient, live: str
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s", sse_reconnect_interval="30s")
    url = server.url("fickle")
    tail = (await create_stream(client, url, body=b"x")).headers["stream-next-offset"]
    target = f"/v1/stream/fickle?offset={tail}&live={live}"
    with trio.fail_after(8):
        connections = [await RawConnection.open(server.base_url) for _ in range(5)]
        for conn in connections:
            await conn.send("GET", target)
            if live == "sse":
                opening = await conn.receive_until(b"\n\n")
                assert opening.startswith(b"event: control\n")
        await wait_for_watchers(server, "fickle", 5)
        for conn in connections:
            await conn.aclose()
        await wait_for_no_watchers(server)
        # Appending after the readers left wakes nobody and fails nothing.
        response = await client.post(url, content=b"y", headers={"Content-Type": "text/plain"})
        assert response.status_code == 204
        assert server.service.watchers.statistics().total == 0


async def test_sse_reader_that_stops_reading_mid_stream_is_released(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, sse_reconnect_interval="30s")
    url = server.url("half-read")
    await create_stream(client, url, body=b"first")
    with trio.fail_after(8):
        conn = await RawConnection.open(server.base_url)
        await conn.send("GET", "/v1/stream/half-read?offset=-1&live=sse")
        body = await conn.receive_until(b"event: control")
        assert body.startswith(b"event: data\ndata:first\n\n")
        await wait_for_watchers(server, "half-read", 1)
        # Several appends the reader never reads, then it goes away.
        for n in range(3):
            response = await client.post(
                url, content=b"more %d" % n, headers={"Content-Type": "text/plain"}
            )
            assert response.status_code == 204
        await conn.aclose()
        await wait_for_no_watchers(server)


async def test_long_poll_times_out_with_204(server: RunningServer, client: httpx.AsyncClient) -> None:
    url = server.url("quiet")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    started = trio.current_time()
    with trio.fail_after(5):
        response = await client.get(url, params={"offset": tail, "live": "long-poll"})
    elapsed = trio.current_time() - started
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["stream-up-to-date"] == "true"
    assert response.headers["stream-next-offset"] == tail
    assert response.headers["cache-control"] == "no-store"
    assert "stream-cursor" in response.headers
    assert elapsed >= server.service.config.long_poll_timeout * 0.9
    assert server.service.watchers.statistics().total == 0


async def test_long_poll_on_closed_stream_returns_at_once(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s")
    url = server.url("done")
    await create_stream(client, url, body=b"all", **{"Stream-Closed": "true"})
    with trio.fail_after(3):
        tail_read = await client.get(url, params={"offset": "now", "live": "long-poll"})
        catch_up = await client.get(url, params={"offset": "-1", "live": "long-poll"})
    assert tail_read.status_code == 204
    assert tail_read.headers["stream-closed"] == "true"
    assert tail_read.headers["stream-up-to-date"] == "true"
    assert catch_up.status_code == 200
    assert catch_up.content == b"all"
    assert catch_up.headers["stream-closed"] == "true"


async def test_closing_a_stream_wakes_long_poll_and_ends_sse(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="30s", sse_reconnect_interval="30s")
    url = server.url("closing")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    polls: list[httpx.Response] = []
    sses: list[list[SseEvent]] = []
    with trio.fail_after(8):
        async with trio.open_nursery() as readers:
            readers.start_soon(_start_long_poll, client, url, tail, polls)
            readers.start_soon(_start_sse, client, url, tail, sses)
            await wait_for_watchers(server, "closing", 2)
            response = await client.post(url, headers={"Stream-Closed": "true"})
            assert response.status_code == 204
        await wait_for_no_watchers(server)
    assert polls[0].status_code == 204
    assert polls[0].headers["stream-closed"] == "true"
    [events] = sses
    assert [e.event for e in events] == ["control", "control"]
    final = json.loads(events[-1].data)
    assert final == {"streamNextOffset": tail, "upToDate": True, "streamClosed": True}


async def test_soft_delete_of_a_forked_source_releases_live_readers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # A source with a live fork is only soft-deleted: it answers 410 from then on.
    server = await start_server(nursery, long_poll_timeout="30s", sse_reconnect_interval="30s")
    url = server.url("source")
    tail = (await create_stream(client, url, body=b"shared")).headers["stream-next-offset"]
    fork = await client.put(
        server.url("branch"), headers={"Stream-Forked-From": "/v1/stream/source"}
    )
    assert fork.status_code == 201
    polls: list[httpx.Response] = []
    sses: list[list[SseEvent]] = []
    with trio.fail_after(8):
        async with trio.open_nursery() as readers:
            readers.start_soon(_start_long_poll, client, url, tail, polls)
            readers.start_soon(_start_sse, client, url, tail, sses)
            await wait_for_watchers(server, "source", 2)
            assert (await client.delete(url)).status_code == 204
        await wait_for_no_watchers(server)
    assert [r.status_code for r in polls] == [410]
    assert [[e.event for e in events] for events in sses] == [["control"]]
    assert (await client.get(url)).status_code == 410
    branch = await client.get(server.url("branch"), params={"offset": "-1"})
    assert branch.content == b"shared"
