"""gzip on catch-up reads, when the client asks for it (RFC 9110 content coding)."""

from __future__ import annotations

import gzip
import json
from typing import TYPE_CHECKING

import pytest

from ..conftest import RunningServer
from .helpers import create_stream

if TYPE_CHECKING:
    import httpx

GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


async def _raw_get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], offset: str = "-1"
) -> tuple[httpx.Response, bytes]:
    """A catch-up GET and its body exactly as sent, not decoded."""
    async with client.stream("GET", url, params={"offset": offset}, headers=headers) as response:
        return response, b"".join([chunk async for chunk in response.aiter_raw()])


@pytest.mark.parametrize("size", [4096, 300_000])  # compressed inline, and in a worker thread
async def test_catch_up_is_gzipped_when_asked(
    server: RunningServer, client: httpx.AsyncClient, size: int
) -> None:
    url = server.url("logs")
    data = b"".join(b"line %d of the log\n" % i for i in range(size // 16))[:size]
    await create_stream(client, url, content_type="text/plain", body=data)
    response, raw = await _raw_get(client, url, GZIP)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert len(raw) < len(data) // 3
    assert gzip.decompress(raw) == data
    plain, plain_raw = await _raw_get(client, url, IDENTITY)
    assert "content-encoding" not in plain.headers
    assert plain_raw == data
    assert plain.headers["vary"] == "Accept-Encoding"
    assert plain.headers["etag"] != response.headers["etag"]
    for header in ("stream-next-offset", "stream-up-to-date", "cache-control", "content-type"):
        assert plain.headers[header] == response.headers[header]
    again, again_raw = await _raw_get(client, url, GZIP)
    assert again_raw == raw  # the same bytes each time, as its strong ETag promises
    assert again.headers["etag"] == response.headers["etag"]


async def test_each_encoding_revalidates_against_its_own_etag(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("tags")
    await create_stream(client, url, content_type="text/plain", body=b"x" * 5000)
    gzipped, _ = await _raw_get(client, url, GZIP)
    plain, _ = await _raw_get(client, url, IDENTITY)
    cached = {"If-None-Match": gzipped.headers["etag"]}
    response = await client.get(url, params={"offset": "-1"}, headers={**GZIP, **cached})
    assert response.status_code == 304
    assert response.headers["etag"] == gzipped.headers["etag"]
    assert response.headers["vary"] == "Accept-Encoding"
    mismatched = await client.get(url, params={"offset": "-1"}, headers={**IDENTITY, **cached})
    assert mismatched.status_code == 200
    assert mismatched.headers["etag"] == plain.headers["etag"]


@pytest.mark.parametrize(
    ("accept", "body", "encoded"),
    [
        ("gzip", b"short", False),  # below the size worth compressing
        ("br, deflate", b"y" * 5000, False),
        ("gzip;q=0", b"y" * 5000, False),
        ("*", b"y" * 5000, True),
        ("deflate;q=1, gzip;q=0.4", b"y" * 5000, True),
    ],
)
async def test_gzip_only_where_asked_and_worthwhile(
    server: RunningServer, client: httpx.AsyncClient, accept: str, body: bytes, encoded: bool
) -> None:
    url = server.url("choice")
    await create_stream(client, url, content_type="text/plain", body=body)
    response, raw = await _raw_get(client, url, {"Accept-Encoding": accept})
    assert response.status_code == 200
    assert ("content-encoding" in response.headers) is encoded
    assert (gzip.decompress(raw) if encoded else raw) == body


async def test_json_catch_up_gzipped_keeps_message_boundaries(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("events")
    messages = [{"n": i, "text": "event number %d" % i} for i in range(200)]
    await create_stream(client, url, content_type="application/json", body=json.dumps(messages).encode())
    response, raw = await _raw_get(client, url, GZIP)
    assert response.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw)) == messages


async def test_live_reads_are_never_gzipped(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("live")
    created = await create_stream(client, url, content_type="text/plain", body=b"z" * 5000)
    assert created.status_code == 201
    async with client.stream(
        "GET", url, params={"offset": "-1", "live": "long-poll"}, headers=GZIP
    ) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert raw == b"z" * 5000


async def test_repeated_list_headers_count_as_one_list(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("lines")
    await create_stream(client, url, content_type="text/plain", body=b"q" * 5000)
    gzipped, _ = await _raw_get(client, url, GZIP)
    headers = [
        ("Accept-Encoding", "identity"),
        ("Accept-Encoding", "gzip"),
        ("If-None-Match", '"not-this-one"'),
        ("If-None-Match", gzipped.headers["etag"]),
    ]
    response = await client.get(url, params={"offset": "-1"}, headers=headers)
    assert response.status_code == 304
