"""Reads over real HTTP: catch-up, ETags, caching, SSE encoding, cursors."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import TYPE_CHECKING

import pytest
import trio

from ds_trio.protocol.caching import CURSOR_EPOCH, CURSOR_INTERVAL

from ..conftest import RunningServer, start_server
from .helpers import FakeClock, SseEvent, create_stream, read_sse, sse_events, wait_for_watchers

if TYPE_CHECKING:
    import httpx

TEXT = {"Content-Type": "text/plain"}
CACHEABLE = "public, max-age=60, stale-while-revalidate=300"


async def _sse(
    client: httpx.AsyncClient, url: str, **params: str
) -> tuple[httpx.Headers, list[SseEvent]]:
    """A whole SSE response (the stream must end it: closed, or a short interval)."""
    with trio.fail_after(5):
        async with client.stream("GET", url, params={"live": "sse", **params}) as response:
            assert response.status_code == 200
            return response.headers, await read_sse(response)


async def test_offset_now_reads_the_tail_uncached(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("s")
    tail = (await create_stream(client, url, body=b"old")).headers["stream-next-offset"]
    response = await client.get(url, params={"offset": "now"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["stream-next-offset"] == tail
    assert response.headers["stream-up-to-date"] == "true"
    assert response.headers["cache-control"] == "no-store"
    assert "etag" not in response.headers


async def test_reads_are_split_at_max_read_bytes(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, max_read_bytes=16)
    url = server.url("big")
    await create_stream(client, url, body=bytes(range(40)))
    chunks: list[bytes] = []
    offset = "-1"
    for _ in range(5):
        response = await client.get(url, params={"offset": offset})
        chunks.append(response.content)
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            break
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert b"".join(chunks) == bytes(range(40))

    # JSON messages are never split, and one larger than the limit still comes whole.
    json_url = server.url("json")
    await create_stream(
        client, json_url, "application/json", b'["aaaaaaaaaa", "bbbbbbbbbb", "' + b"c" * 30 + b'"]'
    )
    bodies = []
    offset = "-1"
    for _ in range(5):
        response = await client.get(json_url, params={"offset": offset})
        bodies.append(json.loads(response.content))
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            break
    assert bodies == [["aaaaaaaaaa"], ["bbbbbbbbbb"], ["c" * 30]]


async def test_empty_json_stream_reads_as_empty_array(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("j")
    await create_stream(client, url, "application/json")
    response = await client.get(url, params={"offset": "-1"})
    assert (response.status_code, response.content) == (200, b"[]")
    assert response.headers["content-type"] == "application/json"


async def test_etag_gives_304_and_changes_with_data_and_closure(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("tagged")
    await create_stream(client, url, body=b"v1")
    first = await client.get(url, params={"offset": "-1"})
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    for candidate in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await client.get(
            url, params={"offset": "-1"}, headers={"If-None-Match": candidate}
        )
        assert cached.status_code == 304, candidate
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["stream-next-offset"] == first.headers["stream-next-offset"]
    other = await client.get(url, params={"offset": "-1"}, headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200

    await client.post(url, content=b"v2", headers=TEXT)
    grown = await client.get(url, params={"offset": "-1"}, headers={"If-None-Match": etag})
    assert (grown.status_code, grown.content) == (200, b"v1v2")
    assert grown.headers["etag"] != etag

    # Closing without new data must change the ETag, or a 304 would hide the closure.
    tail = grown.headers["stream-next-offset"]
    at_tail = await client.get(url, params={"offset": tail})
    await client.post(url, headers={"Stream-Closed": "true"})
    closed = await client.get(
        url, params={"offset": tail}, headers={"If-None-Match": at_tail.headers["etag"]}
    )
    assert closed.status_code == 200
    assert closed.headers["stream-closed"] == "true"
    assert closed.headers["etag"] != at_tail.headers["etag"]
    whole = await client.get(
        url, params={"offset": "-1"}, headers={"If-None-Match": grown.headers["etag"]}
    )
    assert whole.status_code == 200
    assert whole.headers["stream-closed"] == "true"
    assert whole.headers["etag"] not in (etag, grown.headers["etag"])
    again = await client.get(
        url, params={"offset": "-1"}, headers={"If-None-Match": whole.headers["etag"]}
    )
    assert again.status_code == 304


async def test_etag_differs_for_a_recreated_stream(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("reborn")
    await create_stream(client, url, body=b"same")
    before = await client.get(url, params={"offset": "-1"})
    await client.delete(url)
    await create_stream(client, url, body=b"same")
    after = await client.get(
        url, params={"offset": "-1"}, headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]


async def test_cache_control_by_response_kind(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="100ms")
    url = server.url("cached")
    tail = (await create_stream(client, url, body=b"data")).headers["stream-next-offset"]
    data = await client.get(url, params={"offset": "-1"})
    assert data.headers["cache-control"] == CACHEABLE
    assert (await client.head(url)).headers["cache-control"] == "no-store"
    assert (await client.get(url, params={"offset": "now"})).headers["cache-control"] == "no-store"
    # An empty read at the tail of an open stream may change at any moment.
    assert (await client.get(url, params={"offset": tail})).headers["cache-control"] == "no-store"
    timed_out = await client.get(url, params={"offset": tail, "live": "long-poll"})
    assert timed_out.status_code == 204
    assert timed_out.headers["cache-control"] == "no-store"
    live_data = await client.get(url, params={"offset": "-1", "live": "long-poll"})
    assert live_data.status_code == 200
    assert live_data.headers["cache-control"] == CACHEABLE
    assert "etag" in live_data.headers
    # Errors are never cached.
    assert (await client.get(server.url("nope"))).headers["cache-control"] == "no-store"
    assert (await client.get(url, params={"offset": "junk"})).headers["cache-control"] == "no-store"
    # The closed tail is final, so it is cacheable.
    await client.post(url, headers={"Stream-Closed": "true"})
    final = await client.get(url, params={"offset": tail})
    assert final.headers["stream-closed"] == "true"
    assert final.headers["cache-control"] == CACHEABLE


async def test_private_cache_visibility(nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
    server = await start_server(nursery, cache_visibility="private")
    url = server.url("mine")
    await create_stream(client, url, body=b"secret")
    response = await client.get(url, params={"offset": "-1"})
    assert response.headers["cache-control"] == "private, max-age=60, stale-while-revalidate=300"


@pytest.mark.parametrize(
    "content_type",
    ["application/octet-stream", "application/x-protobuf", "image/png", "application/ndjson"],
)
async def test_sse_base64_for_binary_streams(
    server: RunningServer, client: httpx.AsyncClient, content_type: str
) -> None:
    url = server.url("bin")
    payload = bytes(range(256)) + b"\r\n\n\r" + os.urandom(100_000)  # long enough to wrap lines
    await create_stream(client, url, content_type, payload, **{"Stream-Closed": "true"})
    headers, events = await _sse(client, url, offset="-1")
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["stream-sse-data-encoding"] == "base64"
    assert [e.event for e in events] == ["data", "control"]
    text = events[0].data.replace("\n", "").replace("\r", "")
    assert len(text) % 4 == 0
    assert base64.b64decode(text, validate=True) == payload
    control = json.loads(events[1].data)  # control events stay JSON
    assert control["streamClosed"] is True


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/html; charset=utf-8", "application/json"]
)
async def test_sse_text_for_text_and_json_streams(
    server: RunningServer, client: httpx.AsyncClient, content_type: str
) -> None:
    url = server.url("txt")
    is_json = content_type == "application/json"
    body = b'[{"line": "one"}, "two"]' if is_json else "one\ntwo\r\nthree\rfour é".encode()
    await create_stream(client, url, content_type, body, **{"Stream-Closed": "true"})
    headers, events = await _sse(client, url, offset="-1")
    assert "stream-sse-data-encoding" not in headers
    assert [e.event for e in events] == ["data", "control"]
    if is_json:
        assert json.loads(events[0].data) == [{"line": "one"}, "two"]
    else:
        assert events[0].data == "one\ntwo\nthree\nfour é"  # every line break becomes a data: line


async def test_sse_data_line_starting_with_space_survives(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("spaces")
    await create_stream(client, url, body=b"  indented\n\tx", **{"Stream-Closed": "true"})
    _, events = await _sse(client, url, offset="-1")
    assert events[0].data == "  indented\n\tx"


async def test_sse_closes_after_the_reconnect_interval(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, sse_reconnect_interval="300ms")
    url = server.url("brief")
    tail = (await create_stream(client, url, body=b"x")).headers["stream-next-offset"]
    started = trio.current_time()
    headers, events = await _sse(client, url, offset=tail)
    elapsed = trio.current_time() - started
    assert 0.25 <= elapsed < 3
    assert headers["cache-control"] == "no-cache"
    assert [e.event for e in events] == ["control"]
    control = json.loads(events[0].data)
    assert control["streamNextOffset"] == tail
    assert control["upToDate"] is True
    assert "streamCursor" in control
    assert "streamClosed" not in control
    assert server.service.watchers.statistics().total == 0


async def test_sse_closes_after_the_interval_even_while_data_flows(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, sse_reconnect_interval="300ms")
    url = server.url("busy")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    with trio.fail_after(5):
        async with client.stream("GET", url, params={"offset": tail, "live": "sse"}) as response:
            done = trio.Event()
            async with trio.open_nursery() as writers:

                async def keep_writing() -> None:
                    # Finish each append rather than cancel it: a POST cut off mid-body
                    # leaves httpx's body generator for the GC to warn about.
                    while not done.is_set():
                        await client.post(url, content=b"tick", headers=TEXT)
                        with trio.move_on_after(0.02):
                            await done.wait()

                writers.start_soon(keep_writing)
                events = await read_sse(response)
                done.set()
    data = "".join(e.data for e in events if e.event == "data")
    assert data
    assert set(data.split("tick")) == {""}
    assert events[-1].event == "control"


async def test_live_cursors_never_go_backwards(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(CURSOR_EPOCH + 1000 * CURSOR_INTERVAL + 1)  # interval 1000
    server.service.clock = clock
    server.service.jitter = lambda: 50  # seconds: 3 intervals when rounded up
    url = server.url("cursors")
    await create_stream(client, url, body=b"x")

    async def poll(cursor: str | None) -> str:
        params = {"offset": "-1", "live": "long-poll", **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=params)
        assert response.status_code == 200
        return response.headers["stream-cursor"]

    assert await poll(None) == "1000"
    assert await poll("1000") == "1003"  # echoed the current interval: jump ahead
    assert await poll("1003") == "1006"  # still ahead of the clock: keep going up
    assert await poll("999") == "1000"  # behind: the current interval
    assert await poll("junk") == "1000"
    clock.advance(10 * CURSOR_INTERVAL)
    assert await poll("1006") == "1010"  # the clock caught up

    # SSE carries the cursor in control events, advancing from the one echoed.
    await client.post(url, headers={"Stream-Closed": "true"})
    with trio.fail_after(5):
        async with client.stream(
            "GET", url, params={"offset": "-1", "live": "sse", "cursor": "1010"}
        ) as r:
            events = await read_sse(r)
    controls = [json.loads(e.data) for e in events if e.event == "control"]
    assert all("streamCursor" not in c for c in controls)  # closed: no reconnect, no cursor


async def test_real_clock_cursors_increase_when_echoed(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("echo")
    await create_stream(client, url, body=b"x")
    cursors: list[int] = []
    cursor: str | None = None
    for _ in range(5):
        params = {"offset": "-1", "live": "long-poll", **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=params)
        cursor = response.headers["stream-cursor"]
        cursors.append(int(cursor))
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 5
    now_interval = int((time.time() - CURSOR_EPOCH) // CURSOR_INTERVAL)
    assert cursors[0] in (now_interval, now_interval + 1)


@pytest.mark.parametrize(
    ("echoed", "expected"),
    [
        (None, ["500", "500", "501", "502"]),  # follows the clock
        ("500", ["501", "501", "501", "502"]),  # ahead of the echo, kept until the clock passes it
    ],
)
async def test_sse_cursors_in_one_connection_never_go_backwards_nor_run_ahead(
    nursery: trio.Nursery, client: httpx.AsyncClient, echoed: str | None, expected: list[str]
) -> None:
    server = await start_server(nursery, sse_reconnect_interval="30s")
    clock = FakeClock(CURSOR_EPOCH + 500 * CURSOR_INTERVAL)
    server.service.clock = clock
    server.service.jitter = lambda: 20  # one interval
    url = server.url("sse-cursor")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    params = {"offset": tail, "live": "sse", **({"cursor": echoed} if echoed else {})}
    controls: list[dict[str, object]] = []
    with trio.fail_after(5):
        async with client.stream("GET", url, params=params) as response:
            async for event in sse_events(response):
                if event.event != "control":
                    continue
                controls.append(json.loads(event.data))
                appended = len(controls) - 1
                if appended == 3:
                    await client.post(url, headers={"Stream-Closed": "true"})
                elif appended < 3:
                    if appended > 0:
                        clock.advance(CURSOR_INTERVAL)
                    await client.post(url, content=b"%d" % appended, headers=TEXT)
    cursors = [c["streamCursor"] for c in controls if "streamCursor" in c]
    assert cursors == expected
    assert controls[-1]["streamClosed"] is True


async def test_long_poll_from_now_gets_only_new_data(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, long_poll_timeout="10s")
    url = server.url("fresh")
    await create_stream(client, url, body=b"old")
    results: list[httpx.Response] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as readers:

            async def read() -> None:
                results.append(await client.get(url, params={"offset": "now", "live": "long-poll"}))

            readers.start_soon(read)
            await wait_for_watchers(server, "fresh", 1)
            appended = await client.post(url, content=b"new", headers=TEXT)
    [response] = results
    assert response.status_code == 200
    assert response.content == b"new"
    assert response.headers["stream-next-offset"] == appended.headers["stream-next-offset"]
