"""Common response headers: security headers everywhere, CORS and preflight."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import SECURITY_HEADERS, RawConnection, create_stream, raw_request, wait_for_watchers

if TYPE_CHECKING:
    import httpx

TEXT = {"Content-Type": "text/plain"}
EXPECTED_EXPOSED = {
    "content-type",
    "etag",
    "location",
    "stream-next-offset",
    "stream-cursor",
    "stream-up-to-date",
    "stream-closed",
    "stream-ttl",
    "stream-expires-at",
    "stream-sse-data-encoding",
    "producer-epoch",
    "producer-seq",
    "producer-expected-seq",
    "producer-received-seq",
}


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def _check_common(headers: httpx.Headers | dict[str, str], origin: str = "*") -> None:
    for name, value in SECURITY_HEADERS.items():
        expected = origin if name == "access-control-allow-origin" else value
        assert headers.get(name) == expected, (name, dict(headers))
    assert EXPECTED_EXPOSED <= _tokens(headers["access-control-expose-headers"])
    assert "server" not in headers  # no software banner
    assert "date" in headers


async def test_security_and_cors_headers_on_every_kind_of_response(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, max_append_bytes="1KiB", long_poll_timeout="100ms")
    url = server.url("s")
    responses: dict[str, httpx.Response] = {}
    responses["put 201"] = await client.put(url, headers=TEXT)
    responses["put 200"] = await client.put(url, headers=TEXT)
    responses["put 409"] = await client.put(url, headers={"Content-Type": "application/json"})
    responses["post 204"] = await client.post(url, content=b"x", headers=TEXT)
    responses["post 400"] = await client.post(url, content=b"x")
    responses["post 409"] = await client.post(
        url, content=b"1", headers={"Content-Type": "application/json"}
    )
    responses["post 413"] = await client.post(url, content=b"x" * 2000, headers=TEXT)
    responses["get 200"] = await client.get(url, params={"offset": "-1"})
    etag = responses["get 200"].headers["etag"]
    responses["get 304"] = await client.get(
        url, params={"offset": "-1"}, headers={"If-None-Match": etag}
    )
    responses["get 400"] = await client.get(url, params={"offset": "bad"})
    responses["get 404"] = await client.get(server.url("missing"))
    responses["long-poll 200"] = await client.get(url, params={"offset": "-1", "live": "long-poll"})
    responses["long-poll 204"] = await client.get(
        url, params={"offset": "now", "live": "long-poll"}
    )
    responses["head 200"] = await client.head(url)
    responses["head 404"] = await client.head(server.url("missing"))
    responses["patch 405"] = await client.patch(url, content=b"x")
    responses["options 204"] = await client.options(url)
    responses["healthz 200"] = await client.get(f"{server.base_url}/healthz")
    responses["root 404"] = await client.get(f"{server.base_url}/")
    responses["delete 204"] = await client.delete(url)
    responses["delete 404"] = await client.delete(url)
    for label, response in responses.items():
        assert str(response.status_code) == label.split()[-1], label
        _check_common(response.headers)
    for raw_path in ("/v1/stream/a/../b", "/v1/stream/%00", "/v1/stream/a%zz"):
        raw = await raw_request(server.base_url, "GET", raw_path)
        assert raw.status == 400
        _check_common(raw.headers)


async def test_sse_response_has_common_headers(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, sse_reconnect_interval="100ms")
    url = server.url("sse")
    await create_stream(client, url)
    with trio.fail_after(5):
        async with client.stream("GET", url, params={"offset": "-1", "live": "sse"}) as response:
            await response.aread()
    assert response.status_code == 200
    _check_common(response.headers)


async def test_preflight(server: RunningServer, client: httpx.AsyncClient) -> None:
    # A preflight comes before the stream exists, and for any path shape.
    for url in (server.url("not-yet"), server.url("a/b/c")):
        response = await client.options(
            url,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": (
                    "content-type, producer-id, producer-epoch, producer-seq"
                ),
            },
        )
        assert response.status_code == 204
        assert response.content == b""
        methods = _tokens(response.headers["access-control-allow-methods"])
        assert methods >= {"get", "head", "post", "put", "delete", "options"}
        allowed = _tokens(response.headers["access-control-allow-headers"])
        assert allowed >= {"content-type", "producer-id", "producer-epoch", "producer-seq"}
        assert int(response.headers["access-control-max-age"]) > 0
        _check_common(response.headers)
    bare = await client.options(server.url("x"))
    assert bare.status_code == 204
    defaults = _tokens(bare.headers["access-control-allow-headers"])
    assert defaults >= {
        "content-type",
        "if-none-match",
        "stream-ttl",
        "stream-expires-at",
        "stream-seq",
        "stream-closed",
        "producer-id",
        "producer-epoch",
        "producer-seq",
    }
    assert (await client.head(server.url("x"))).status_code == 404  # preflight created nothing


async def test_configured_cors_origin_varies_on_origin(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, cors_origin="https://app.example")
    url = server.url("s")
    for response in (
        await client.put(url, headers=TEXT),
        await client.get(url, params={"offset": "-1"}),
        await client.get(server.url("missing")),
        await client.options(url, headers={"Origin": "https://app.example"}),
    ):
        _check_common(response.headers, origin="https://app.example")
        assert "origin" in _tokens(response.headers["vary"])
    catch_up = await client.get(url, params={"offset": "-1"})
    assert _tokens(catch_up.headers["vary"]) >= {"accept-encoding", "origin"}


async def test_head_matches_get_headers_without_a_body(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("h")
    await create_stream(client, url, "text/plain", b"abc", **{"Stream-TTL": "3600"})
    head = await client.head(url)
    get = await client.get(url, params={"offset": "-1"})
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "text/plain"
    assert head.headers["stream-next-offset"] == get.headers["stream-next-offset"]
    assert head.headers["stream-ttl"] == "3600"
    assert "stream-expires-at" not in head.headers
    raw = await raw_request(server.base_url, "HEAD", "/v1/stream/h")
    assert raw.status == 200
    assert raw.body == b""


async def test_error_bodies_are_short_plain_text(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    for response in (
        await client.get(server.url("missing")),
        await client.put(server.url("x"), headers={"Stream-TTL": "soon"}),
        await client.request("FROB", server.url("x")),
    ):
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert 0 < len(response.content) <= 200
        assert response.text.endswith("\n")
        assert "\n" not in response.text[:-1]


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_live_responses_use_keep_alive_connections(
    nursery: trio.Nursery, client: httpx.AsyncClient, live: str
) -> None:
    # A live read then an ordinary request on the same connection.
    server = await start_server(nursery, long_poll_timeout="10s", sse_reconnect_interval="10s")
    url = server.url("k")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    with trio.fail_after(5):
        conn = await RawConnection.open(server.base_url)
        try:
            await conn.send("GET", f"/v1/stream/k?offset={tail}&live={live}", keep_alive=True)
            if live == "sse":
                await conn.receive_response()
            await wait_for_watchers(server, "k", 1)
            await client.post(url, headers={"Stream-Closed": "true"})
            response = await conn.receive_response()
            body = await conn.receive_body()
            assert response.status_code == (200 if live == "sse" else 204)
            if live == "sse":
                assert b'"streamClosed":true' in body
            conn.next_cycle()
            await conn.send("GET", "/healthz", keep_alive=True)
            assert (await conn.receive_response()).status_code == 200
        finally:
            await conn.aclose()
