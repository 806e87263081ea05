"""Creating streams and appending to them over real HTTP (spec 5.1-5.3)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import create_stream, wait_for_no_watchers, wait_for_watchers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


def _producer(seq: int, epoch: int = 0, producer_id: str = "writer-1") -> dict[str, str]:
    return {"Producer-Id": producer_id, "Producer-Epoch": str(epoch), "Producer-Seq": str(seq)}


async def _read_all(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url, params={"offset": "-1"})
    assert response.status_code == 200
    return response.content


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_creates_then_confirms(server: RunningServer, client: httpx.AsyncClient) -> None:
    url = server.url("fresh")
    created = await client.put(url, headers={"Content-Type": "text/plain; charset=utf-8"})
    assert created.status_code == 201
    assert created.headers["location"] == url
    assert created.headers["content-type"] == "text/plain; charset=utf-8"
    start = created.headers["stream-next-offset"]
    assert created.content == b""
    again = await client.put(url, headers={"Content-Type": "text/plain; charset=utf-8"})
    assert again.status_code == 200
    assert again.headers["stream-next-offset"] == start
    assert "location" not in again.headers
    head = await client.head(url)
    assert head.status_code == 200
    assert head.headers["content-type"] == "text/plain; charset=utf-8"
    assert head.headers["stream-next-offset"] == start


async def test_put_without_content_type_is_octet_stream(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("untyped")
    response = await client.put(url)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/octet-stream"
    append = await client.post(
        url, content=b"\x00\x01", headers={"Content-Type": "application/octet-stream"}
    )
    assert append.status_code == 204
    assert await _read_all(client, url) == b"\x00\x01"


async def test_put_with_initial_data(server: RunningServer, client: httpx.AsyncClient) -> None:
    text = await create_stream(client, server.url("t"), body=b"first")
    assert (
        text.headers["stream-next-offset"]
        > (await client.put(server.url("e"))).headers["stream-next-offset"]
    )
    assert await _read_all(client, server.url("t")) == b"first"
    await create_stream(client, server.url("j"), "application/json", b' [ {"a": 1} , 2 ] ')
    assert await _read_all(client, server.url("j")) == b'[{"a": 1},2]'
    await create_stream(client, server.url("j0"), "application/json", b"[]")
    assert await _read_all(client, server.url("j0")) == b"[]"


async def test_appends_get_increasing_offsets_and_read_back(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("log")
    offsets = [(await create_stream(client, url)).headers["stream-next-offset"]]
    for part in (b"a", b"bc", b"def"):
        response = await client.post(url, content=part, headers=TEXT)
        assert response.status_code == 204
        assert response.content == b""
        offsets.append(response.headers["stream-next-offset"])
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == 4
    assert await _read_all(client, url) == b"abcdef"
    expected_rest = [b"abcdef", b"bcdef", b"def", b""]
    for offset, rest in zip(offsets, expected_rest, strict=True):
        response = await client.get(url, params={"offset": offset})
        assert response.status_code == 200
        assert response.content == rest
        assert response.headers["stream-next-offset"] == offsets[-1]
        assert response.headers["stream-up-to-date"] == "true"


async def test_json_appends_flatten_one_level_and_keep_bytes(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("events")
    await create_stream(client, url, "application/json")
    for body in (b'{ "k" : 1 }', b"[2, [3, 4]]", b'"five"', b"\n[ null ]\n"):
        assert (await client.post(url, content=body, headers=JSON)).status_code == 204
    content = await _read_all(client, url)
    assert content == b'[{ "k" : 1 },2,[3, 4],"five",null]'
    assert json.loads(content) == [{"k": 1}, 2, [3, 4], "five", None]


async def test_media_type_match_ignores_case_and_parameters(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("typed")
    await create_stream(client, url, "text/plain; charset=utf-8")
    for content_type in ("TEXT/PLAIN", "text/plain;charset=latin-1", "Text/Plain ; q=1"):
        response = await client.post(url, content=b"x", headers={"Content-Type": content_type})
        assert response.status_code == 204, content_type
    response = await client.post(url, content=b"x", headers={"Content-Type": "text/html"})
    assert response.status_code == 409


async def test_chunked_request_bodies_are_accepted(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("chunked")
    response = await client.put(url, content=_pieces(b"he", b"llo"), headers=TEXT)
    assert response.status_code == 201
    assert response.request.headers["transfer-encoding"] == "chunked"
    response = await client.post(url, content=_pieces(b", ", b"wor", b"ld"), headers=TEXT)
    assert response.status_code == 204
    assert await _read_all(client, url) == b"hello, world"
    json_url = server.url("chunked-json")
    await create_stream(client, json_url, "application/json")
    response = await client.post(
        json_url, content=_pieces(b"[1,", b' {"a"', b": 2}]"), headers=JSON
    )
    assert response.status_code == 204
    assert await _read_all(client, json_url) == b'[1,{"a": 2}]'


async def test_close_append_and_close_and_idempotent_close(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = server.url("finite")
    await create_stream(client, url)
    last = await client.post(url, content=b"end", headers={**TEXT, "Stream-Closed": "true"})
    assert last.status_code == 204
    assert last.headers["stream-closed"] == "true"
    final = last.headers["stream-next-offset"]
    for _ in range(2):  # closing again is fine and changes nothing
        again = await client.post(url, headers={"Stream-Closed": "true"})
        assert again.status_code == 204
        assert again.headers["stream-closed"] == "true"
        assert again.headers["stream-next-offset"] == final
    head = await client.head(url)
    assert head.headers["stream-closed"] == "true"
    read = await client.get(url, params={"offset": "-1"})
    assert read.content == b"end"
    assert read.headers["stream-closed"] == "true"


async def test_stream_seq_must_increase(server: RunningServer, client: httpx.AsyncClient) -> None:
    url = server.url("seq")
    await create_stream(client, url)
    for seq, status in [("001", 204), ("002", 204), ("002", 409), ("010", 204), ("009", 409)]:
        response = await client.post(url, content=seq.encode(), headers={**TEXT, "Stream-Seq": seq})
        assert response.status_code == status, seq
    assert await _read_all(client, url) == b"001002010"


async def test_idempotent_producer_lifecycle(server: RunningServer, client: httpx.AsyncClient) -> None:
    url = server.url("produced")
    await create_stream(client, url)
    first = await client.post(url, content=b"a", headers={**TEXT, **_producer(0)})
    assert first.status_code == 200
    assert (first.headers["producer-epoch"], first.headers["producer-seq"]) == ("0", "0")
    duplicate = await client.post(url, content=b"a", headers={**TEXT, **_producer(0)})
    assert duplicate.status_code == 204
    assert duplicate.headers["producer-seq"] == "0"
    assert duplicate.headers["stream-next-offset"] == first.headers["stream-next-offset"]
    second = await client.post(url, content=b"b", headers={**TEXT, **_producer(1)})
    assert (second.status_code, second.headers["producer-seq"]) == (200, "1")
    bumped = await client.post(url, content=b"c", headers={**TEXT, **_producer(0, epoch=1)})
    assert (bumped.status_code, bumped.headers["producer-epoch"]) == (200, "1")
    zombie = await client.post(url, content=b"z", headers={**TEXT, **_producer(2, epoch=0)})
    assert zombie.status_code == 403
    assert zombie.headers["producer-epoch"] == "1"
    bad_start = await client.post(url, content=b"z", headers={**TEXT, **_producer(3, epoch=2)})
    assert bad_start.status_code == 400
    other = await client.post(url, content=b"d", headers={**TEXT, **_producer(0, producer_id="w2")})
    assert other.status_code == 200
    assert await _read_all(client, url) == b"abcd"


async def test_out_of_order_producer_requests_both_succeed(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    # seq 1 arrives first and waits (bounded) for seq 0 instead of failing.
    server = await start_server(nursery, producer_gap_wait="5s")
    url = server.url("pipelined")
    await create_stream(client, url)
    results: dict[int, httpx.Response] = {}

    async def send(seq: int, data: bytes) -> None:
        results[seq] = await client.post(url, content=data, headers={**TEXT, **_producer(seq)})

    with trio.fail_after(4):
        async with trio.open_nursery() as senders:
            senders.start_soon(send, 1, b"second")
            await wait_for_watchers(server, "pipelined", 1)  # seq 1 is waiting out the gap
            await send(0, b"first")
        await wait_for_no_watchers(server)
    assert (results[0].status_code, results[0].headers["producer-seq"]) == (200, "0")
    assert (results[1].status_code, results[1].headers["producer-seq"]) == (200, "1")
    assert results[0].headers["stream-next-offset"] < results[1].headers["stream-next-offset"]
    assert await _read_all(client, url) == b"firstsecond"


async def test_real_producer_gap_is_409_after_the_gap_wait(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, producer_gap_wait="200ms")
    url = server.url("gappy")
    await create_stream(client, url)
    assert (
        await client.post(url, content=b"a", headers={**TEXT, **_producer(0)})
    ).status_code == 200
    started = trio.current_time()
    with trio.fail_after(3):
        gap = await client.post(url, content=b"c", headers={**TEXT, **_producer(2)})
    elapsed = trio.current_time() - started
    assert gap.status_code == 409
    assert gap.headers["producer-expected-seq"] == "1"
    assert gap.headers["producer-received-seq"] == "2"
    assert gap.headers["content-type"].startswith("text/plain")
    assert 0.18 <= elapsed < 2.0
    assert server.service.watchers.statistics().total == 0
    assert await _read_all(client, url) == b"a"
    # The producer recovers by sending the missing seq, then the one it skipped to.
    for seq, data in ((1, b"b"), (2, b"c")):
        response = await client.post(url, content=data, headers={**TEXT, **_producer(seq)})
        assert response.status_code == 200
    assert await _read_all(client, url) == b"abc"


async def test_producer_gap_wait_ends_on_shutdown(
    nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    server = await start_server(nursery, producer_gap_wait="30s", shutdown_grace="20s")
    url = server.url("stopping")
    await create_stream(client, url)
    with trio.fail_after(3):
        async with trio.open_nursery() as senders:
            results: list[httpx.Response] = []

            async def send_gap() -> None:
                results.append(
                    await client.post(url, content=b"x", headers={**TEXT, **_producer(5)})
                )

            senders.start_soon(send_gap)
            await wait_for_watchers(server, "stopping", 1)
            server.stop.set()
    assert results[0].status_code == 409
    assert results[0].headers["producer-expected-seq"] == "0"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
async def test_delete_removes_the_stream(
    server: RunningServer, client: httpx.AsyncClient, content_type: str
) -> None:
    url = server.url("gone")
    body = b"1" if content_type == "application/json" else b"data"
    await create_stream(client, url, content_type, body)
    assert len(server.service.store) == 1
    assert (await client.delete(url)).status_code == 204
    assert len(server.service.store) == 0
    for method in ("GET", "HEAD", "DELETE"):
        assert (await client.request(method, url)).status_code == 404
    response = await client.post(url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == 404
