"""Per-client and server-wide limits over HTTP: rates, live readers, quotas, sizes, slow clients.

Each runs against both stores.
"""

from __future__ import annotations

import httpx
import trio

from ds_trio.auth import hash_token, new_token

from ..conftest import RunningServer, start_server
from .helpers import FakeClock, assert_short_text_error, wait_for_watchers, wait_until

TEXT = {"Content-Type": "text/plain"}
ALICE, BOB = new_token(), new_token()
TOKENS = [
    {"name": "alice", "sha256": hash_token(ALICE), "scopes": ["admin"]},
    {"name": "bob", "sha256": hash_token(BOB), "scopes": ["admin"]},
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def start(nursery: trio.Nursery, store_settings: dict[str, object], **settings: object) -> RunningServer:
    return await start_server(nursery, **store_settings, **settings)


def assert_too_many(response: httpx.Response, status: int = 429) -> None:
    assert response.status_code == status, response.text
    assert int(response.headers["retry-after"]) >= 1
    if status < 500:
        assert_short_text_error(status, response.headers, response.text)


async def test_each_token_has_its_own_bucket(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, tokens=TOKENS, rate_limit=1, rate_limit_burst=3)
    clock = FakeClock(1_900_000_000.0)
    server.service.clock = clock
    url = server.url("rated")
    assert (await client.put(url, headers={**TEXT, **bearer(ALICE)})).status_code == 201
    for _ in range(2):
        assert (await client.head(url, headers=bearer(ALICE))).status_code == 200
    refused = await client.post(url, content=b"x", headers={**TEXT, **bearer(ALICE)})
    assert_too_many(refused)
    assert refused.headers["retry-after"] == "1"
    assert (await client.head(url, headers=bearer(BOB))).status_code == 200  # another bucket
    clock.advance(1)
    assert (await client.post(url, content=b"x", headers={**TEXT, **bearer(ALICE)})).status_code == 204
    clock.advance(10)  # the refused append did not happen
    body = (await client.get(url, params={"offset": "-1"}, headers=bearer(BOB))).content
    assert body == b"x"


async def test_guessing_tokens_is_rate_limited_by_address(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, tokens=TOKENS, rate_limit=1, rate_limit_burst=2)
    server.service.clock = FakeClock(1_900_000_000.0)
    url = server.url("x")
    for _ in range(2):
        assert (await client.get(url, headers=bearer(new_token()))).status_code == 401
    assert_too_many(await client.get(url, headers=bearer(new_token())))
    assert (await client.get(url, headers=bearer(ALICE))).status_code == 404  # a real token still works


async def test_without_auth_the_address_is_the_client(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, rate_limit=1, rate_limit_burst=1)
    server.service.clock = FakeClock(1_900_000_000.0)
    assert (await client.put(server.url("a"), headers=TEXT)).status_code == 201
    assert_too_many(await client.put(server.url("b"), headers=TEXT))
    assert (await client.get(f"{server.base_url}/healthz")).status_code == 200  # never limited
    assert (await client.get(f"{server.base_url}/readyz")).status_code == 200


async def test_live_readers_are_limited_per_client_then_in_total(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(
        nursery, store_settings, tokens=TOKENS,
        max_live_readers_per_client=2, max_live_readers=3, long_poll_timeout=30,
    )  # fmt: skip
    url = server.url("live")
    created = await client.put(url, headers={**TEXT, **bearer(ALICE)})
    tail = created.headers["stream-next-offset"]
    long_poll = {"offset": tail, "live": "long-poll"}
    answers: list[httpx.Response] = []

    async def wait_for_data(token: str) -> None:
        answers.append(await client.get(url, params=long_poll, headers=bearer(token)))

    async with trio.open_nursery() as readers:
        readers.start_soon(wait_for_data, ALICE)
        readers.start_soon(wait_for_data, ALICE)
        await wait_for_watchers(server, "live", 2)
        assert_too_many(await client.get(url, params=long_poll, headers=bearer(ALICE)))
        sse = await client.get(url, params={"offset": tail, "live": "sse"}, headers=bearer(ALICE))
        assert_too_many(sse)
        readers.start_soon(wait_for_data, BOB)
        await wait_for_watchers(server, "live", 3)
        assert_too_many(await client.get(url, params=long_poll, headers=bearer(BOB)), 503)
        await client.post(url, content=b"go", headers={**TEXT, **bearer(ALICE)})
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert server.service.access is not None and server.service.access.live_readers.held() == 0
    # the places are free again
    assert (await client.get(url, params={"offset": "-1", "live": "long-poll"}, headers=bearer(ALICE))).status_code == 200


async def test_streams_per_prefix(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, max_streams_per_prefix=2)
    for name in ("tenant/a", "tenant/b/c"):
        assert (await client.put(server.url(name), headers=TEXT)).status_code == 201
    assert (await client.put(server.url("tenant/a"), headers=TEXT)).status_code == 200  # idempotent
    refused = await client.put(server.url("tenant/d"), headers=TEXT)
    assert refused.status_code == 403 and "tenant/" in refused.text
    assert_short_text_error(403, refused.headers, refused.text)
    fork = {**TEXT, "Stream-Forked-From": f"{server.service.config.stream_root}/tenant/a"}
    assert (await client.put(server.url("tenant/f"), headers=fork)).status_code == 403
    assert (await client.head(server.url("tenant/d"))).status_code == 404
    assert (await client.put(server.url("other/a"), headers=TEXT)).status_code == 201
    assert (await client.put(server.url("top-level"), headers=TEXT)).status_code == 201
    assert (await client.delete(server.url("tenant/a"))).status_code == 204
    assert (await client.put(server.url("tenant/d"), headers=TEXT)).status_code == 201


async def test_oversized_headers_get_431(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, max_header_bytes="4KiB")
    fits = await client.put(server.url("h"), headers={**TEXT, "X-Pad": "p" * 2000})
    assert fits.status_code == 201
    refused = await client.get(server.url("h"), headers={"X-Pad": "p" * 8000})
    assert refused.status_code == 431
    assert_short_text_error(431 - 31, refused.headers, refused.text)  # a 4xx with a short reason
    assert (await client.get(f"{server.base_url}/healthz", headers={"X-Pad": "p" * 8000})).status_code == 431


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    received = b""
    with trio.fail_after(seconds):
        try:
            while chunk := await stream.receive_some(4096):
                received += chunk
        except trio.BrokenResourceError:  # reset: closed while the client still sent
            pass
    return received


async def test_slow_headers_are_cut_off(
    nursery: trio.Nursery, store_settings: dict[str, object]
) -> None:
    server = await start(nursery, store_settings, keep_alive_timeout="300ms")
    port = int(server.base_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as drip:

        async def send_slowly() -> None:
            await stream.send_all(b"GET /v1/stream/x HTTP/1.1\r\nHost: a\r\n")
            for index in range(100):  # 10 s of headers, a line at a time
                await trio.sleep(0.1)
                try:
                    await stream.send_all(f"X-Drip-{index}: y\r\n".encode())
                except trio.BrokenResourceError:
                    return

        drip.start_soon(send_slowly)
        received = await _closed_within(stream, 5)
        drip.cancel_scope.cancel()
    assert b"200" not in received.split(b"\r\n", 1)[0]


async def test_slow_bodies_are_cut_off(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, body_timeout="1s")
    await client.put(server.url("slow"), headers=TEXT)
    port = int(server.base_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = b"POST /v1/stream/slow HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
        await stream.send_all(head + b"only a little")
        sent = trio.current_time()
        received = await _closed_within(stream, 5)
    assert received.startswith(b"HTTP/1.1 408"), received[:100]
    assert trio.current_time() - sent < 1.8  # body_timeout once, not once more for the 408
    read = await client.get(server.url("slow"), params={"offset": "-1"})
    assert read.content == b""  # nothing of the cut-off body was appended


async def test_a_client_that_stops_reading_is_dropped(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, send_timeout="1s", sse_reconnect_interval="120s")
    url = server.url("firehose")
    await client.put(url, headers=TEXT)
    port = int(server.base_url.rsplit(":", 1)[1])
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stalled = trio.SocketStream(sock)
    async with stalled:
        await stalled.send_all(b"GET /v1/stream/firehose?offset=-1&live=sse HTTP/1.1\r\nHost: a\r\n\r\n")
        access = server.service.access
        assert access is not None
        await wait_until(lambda: access.live_readers.held() == 1)
        chunk = b"z" * 256 * 1024
        with trio.fail_after(20):  # the client reads nothing: the server's sends stall, then fail
            while access.live_readers.held():
                await client.post(url, content=chunk, headers=TEXT)
                await trio.sleep(0.1)
    assert (await client.get(f"{server.base_url}/healthz")).status_code == 200


async def test_connections_closed_by_idle_clients_are_let_go_at_once(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings)  # keep-alive timeout: 75 s
    port = int(server.base_url.rsplit(":", 1)[1])
    baseline = trio.lowlevel.current_statistics().tasks_living
    async def use_then_idle_then_close() -> None:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while b"ok\n" not in answer:
                answer += await stream.receive_some(4096)
            await trio.sleep(0.2)  # the client idles a moment (the server's timer runs), then leaves

    async with trio.open_nursery() as clients:
        for _ in range(20):
            clients.start_soon(use_then_idle_then_close)
    await wait_until(lambda: trio.lowlevel.current_statistics().tasks_living <= baseline, 5)
