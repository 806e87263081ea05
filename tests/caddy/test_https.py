"""A smoke run over HTTPS with HTTP/2 through Caddy (`tls internal`, verified
against Caddy's own CA): create, append, read, long-poll, SSE, close, delete."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio

from ..http.helpers import SseEvent, sse_events
from .helpers import TEXT, public_client, wait_for_live

if TYPE_CHECKING:
    import httpx

    from .stack import ProxiedServer

JSON = {"Content-Type": "application/json"}
LIVE_WAIT = 60.0  # httpx read timeout for responses that wait on purpose
STEP_TIMEOUT = 10.0  # seconds any one step below may take


def _h2(response: httpx.Response) -> httpx.Response:
    assert response.http_version == "HTTP/2", response.http_version
    return response


async def test_smoke_over_https_with_http2(proxied: ProxiedServer) -> None:
    async with public_client(proxied, "https") as (client, base):
        url = f"{base}/v1/stream/smoke"

        created = _h2(await client.put(url, headers=TEXT))
        assert created.status_code == 201
        assert created.headers["location"] == url
        appended = _h2(await client.post(url, content=b"hello ", headers=TEXT))
        assert appended.status_code == 204
        tail = appended.headers["stream-next-offset"]

        read = _h2(await client.get(url, params={"offset": "-1"}))
        assert (read.status_code, read.text) == (200, "hello ")
        assert read.headers["stream-next-offset"] == tail
        head = _h2(await client.head(url))
        assert (head.status_code, head.headers["stream-next-offset"]) == (200, tail)

        # A long-poll at the tail, woken by an append on the same connection.
        answers: list[httpx.Response] = []

        async def long_poll() -> None:
            params = {"offset": tail, "live": "long-poll"}
            answers.append(await client.get(url, params=params, timeout=LIVE_WAIT))

        with trio.fail_after(STEP_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                await wait_for_live(proxied, "long-poll", 1)
                _h2(await client.post(url, content=b"world", headers=TEXT))
        (answer,) = answers
        assert (_h2(answer).status_code, answer.text) == (200, "world")

        # SSE from the start: both appends, then the end of the stream.
        closed = _h2(await client.post(url, headers={**TEXT, "Stream-Closed": "true"}))
        assert closed.status_code == 204
        events: list[SseEvent] = []
        with trio.fail_after(STEP_TIMEOUT):
            params = {"offset": "-1", "live": "sse"}
            async with client.stream("GET", url, params=params, timeout=LIVE_WAIT) as response:
                assert _h2(response).status_code == 200
                assert response.headers["content-type"] == "text/event-stream"
                events = [event async for event in sse_events(response)]
        assert "".join(e.data for e in events if e.event == "data") == "hello world"
        assert json.loads(events[-1].data)["streamClosed"] is True

        # JSON mode passes through intact.
        json_url = f"{base}/v1/stream/smoke-json"
        assert _h2(await client.put(json_url, headers=JSON)).status_code == 201
        posted = await client.post(json_url, content=b'[{"n": 1}, {"n": 2}]', headers=JSON)
        assert _h2(posted).status_code == 204
        messages = _h2(await client.get(json_url, params={"offset": "-1"}))
        assert messages.json() == [{"n": 1}, {"n": 2}]

        for name in (url, json_url):
            assert _h2(await client.delete(name)).status_code == 204
        assert _h2(await client.get(url, params={"offset": "-1"})).status_code == 404

        assert _h2(await client.get(f"{base}/healthz")).status_code == 200
        assert _h2(await client.get(f"{base}/readyz")).status_code == 200
        assert _h2(await client.get(f"{base}/metrics")).status_code == 404
