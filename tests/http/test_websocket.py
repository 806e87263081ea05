"""WebSocket live reads (`live=ws`) over a real server, against both stores.

trio-websocket is the client. Messages are read the way the README tells
clients to: a binary frame is data; a text frame is JSON, an array being data
and an object naming its kind in `type`. Every wait is bounded; the server's
watcher and live-reader counts stand in for events nothing announces.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

import pytest
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from ds_trio.auth import hash_token, new_token
from ds_trio.protocol.offsets import format_offset

from ..conftest import RunningServer, start_server
from .helpers import (
    assert_short_text_error,
    create_stream,
    wait_for_no_watchers,
    wait_for_watchers,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

WAIT: Final = 10  # seconds any one step of a test may take
READER, INGEST, ALICE, BOB = new_token(), new_token(), new_token(), new_token()
TOKENS: Final = [
    {"name": "reader", "sha256": hash_token(READER), "scopes": ["read"], "streams": ["**"]},
    {"name": "ingest", "sha256": hash_token(INGEST), "scopes": ["write"], "streams": ["events/**"]},
    {"name": "alice", "sha256": hash_token(ALICE), "scopes": ["admin"]},
    {"name": "bob", "sha256": hash_token(BOB), "scopes": ["admin"]},
]
HANDSHAKE_KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key
TEXT: Final = {"Content-Type": "text/plain"}
JSON: Final = {"Content-Type": "application/json"}
BINARY: Final = {"Content-Type": "application/octet-stream"}


async def start(
    nursery: trio.Nursery, store_settings: dict[str, object], **settings: object
) -> RunningServer:
    return await start_server(nursery, **store_settings, **settings)


def ws_url(server: RunningServer, name: str, **params: str) -> str:
    url = server.url(name).replace("http://", "ws://", 1)
    return f"{url}?{urlencode(params)}" if params else url


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {token}".encode())]


def parse(message: str | bytes) -> tuple[str, Any]:
    """("data", bytes | list | str) or ("control", dict), by the documented rule."""
    if isinstance(message, bytes):
        return "data", message
    value = json.loads(message)
    if isinstance(value, list):
        return "data", value
    assert value["type"] in ("data", "control"), value
    return value["type"], value["data"] if value["type"] == "data" else value


async def next_batch(connection: WebSocketConnection) -> tuple[Any, dict[str, Any]]:
    """The next batch's data (None when it had none) and the control message after it."""
    kind, value = parse(await connection.get_message())
    if kind == "control":
        return None, value
    kind, control = parse(await connection.get_message())
    assert kind == "control", control
    return value, control


async def read_to_close(
    connection: WebSocketConnection,
) -> tuple[list[tuple[str, Any]], CloseReason]:
    """Every message until the server closes the connection, and why it did."""
    messages: list[tuple[str, Any]] = []
    try:
        while True:
            messages.append(parse(await connection.get_message()))
    except ConnectionClosed as closed:
        assert closed.reason is not None
        return messages, closed.reason


async def _tcp_stream(url: str, receive_buffer: int | None) -> trio.SocketStream:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    if receive_buffer is None:
        return await trio.open_tcp_stream(parts.hostname, parts.port)
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    await sock.connect((parts.hostname, parts.port))
    return trio.SocketStream(sock)


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path + (f"?{parts.query}" if parts.query else "")


@asynccontextmanager
async def connect(
    url: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    receive_buffer: int | None = None,  # SO_RCVBUF, to keep the kernel from reading ahead
    **options: Any,
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client on a TCP stream this helper closes.

    trio-websocket 0.12's own `open_websocket_url` leaves its socket open when
    the server closes first (as ds_trio does) or refuses the handshake, and
    the ResourceWarning fails whichever test the garbage collector runs in.
    """
    stream = await _tcp_stream(url, receive_buffer)
    host, target = _target(url)
    async with stream, trio.open_nursery() as nursery:
        connection = await wrap_client_stream(
            nursery, stream, host, target, extra_headers=headers, **options
        )
        try:
            yield connection
        finally:
            await connection.aclose()
            nursery.cancel_scope.cancel()


async def refusal(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> ConnectionRejected:
    """The server's refusal of a handshake (trio-websocket raises it from its reader task)."""
    stream = await _tcp_stream(url, None)
    host, target = _target(url)
    async with stream:
        with pytest.RaisesGroup(ConnectionRejected) as refused:
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(nursery, stream, host, target, extra_headers=headers)
    rejection = refused.value.exceptions[0]
    assert isinstance(rejection, ConnectionRejected)
    return rejection


def refusal_headers(refused: ConnectionRejected) -> dict[str, str]:
    return {name.decode().lower(): value.decode() for name, value in refused.headers}


def live_readers(server: RunningServer) -> int:
    access = server.service.access
    assert access is not None
    return access.live_readers.held()


def sample(server: RunningServer, name: str, **labels: str) -> float:
    value = server.service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def raw_handshake(
    server: RunningServer, target: str, extra: str = ""
) -> tuple[trio.SocketStream, bytes]:
    """Open a WebSocket by hand; the stream and the response head."""
    port = int(server.base_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {HANDSHAKE_KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    await stream.send_all(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        assert chunk, head
        head += chunk
    return stream, head


FRAMINGS: Final = [
    # Text that reads as a control message must still arrive as data.
    pytest.param(
        "text/plain", b'{"type":"control","upToDate":true}', "more \u00e9\n".encode(), id="text"
    ),
    pytest.param("application/json", b'[{"k":1},[2]]', b'{"k":3}', id="json"),
    pytest.param("application/octet-stream", b"\x00\xff\x80{", b'"\xfe\x00', id="binary"),
]


def as_received(content_type: str, body: bytes) -> Any:
    """What a data message carries for an append of `body`."""
    if content_type == "application/json":
        value = json.loads(body)
        return value if isinstance(value, list) else [value]
    return body.decode() if content_type.startswith("text/") else body


@pytest.mark.parametrize(("content_type", "initial", "later"), FRAMINGS)
async def test_catch_up_then_live_data_then_closure(
    nursery: trio.Nursery,
    store_settings: dict[str, object],
    client: httpx.AsyncClient,
    content_type: str,
    initial: bytes,
    later: bytes,
) -> None:
    server = await start(nursery, store_settings, sse_reconnect_interval="30s")
    url = server.url("s")
    created = await create_stream(client, url, content_type, initial)
    tail = created.headers["stream-next-offset"]
    with trio.fail_after(WAIT):
        async with connect(ws_url(server, "s", offset="-1", live="ws")) as ws:
            data, control = await next_batch(ws)
            assert data == as_received(content_type, initial)
            assert control["streamNextOffset"] == tail
            assert control["upToDate"] is True
            assert control["streamCursor"].isdigit()
            assert "streamClosed" not in control
            await wait_for_watchers(server, "s", 1)
            appended = await client.post(url, content=later, headers={"Content-Type": content_type})
            assert appended.status_code == 204
            data, live_control = await next_batch(ws)
            assert data == as_received(content_type, later)
            assert live_control["streamNextOffset"] == appended.headers["stream-next-offset"]
            assert live_control["upToDate"] is True
            assert int(live_control["streamCursor"]) >= int(control["streamCursor"])
            closed = await client.post(url, headers={"Stream-Closed": "true"})
            assert closed.status_code == 204
            messages, reason = await read_to_close(ws)
    final = {
        "type": "control",
        "streamNextOffset": closed.headers["stream-next-offset"],
        "upToDate": True,
        "streamClosed": True,
    }
    assert messages == [("control", final)]
    assert (reason.code, reason.reason) == (1000, "stream closed")
    await wait_for_no_watchers(server)
    assert live_readers(server) == 0
    assert sample(server, "ds_trio_requests_total", method="GET", status="101") == 1


async def test_offset_now_starts_at_the_tail_and_a_closed_tail_ends_at_once(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, sse_reconnect_interval="30s")
    url = server.url("now")
    tail = (await create_stream(client, url, body=b"old")).headers["stream-next-offset"]
    with trio.fail_after(WAIT):
        async with connect(ws_url(server, "now", offset="now", live="ws")) as ws:
            data, control = await next_batch(ws)
            assert data is None  # no history
            assert control["streamNextOffset"] == tail
            assert control["upToDate"] is True
            await wait_for_watchers(server, "now", 1)
            await client.post(url, content=b"new", headers=TEXT)
            assert (await next_batch(ws))[0] == "new"
        closed = await client.post(url, headers={"Stream-Closed": "true"})
        final = closed.headers["stream-next-offset"]
        for offset in ("now", final):
            async with connect(ws_url(server, "now", offset=offset, live="ws")) as ws:
                messages, reason = await read_to_close(ws)
            assert messages == [
                (
                    "control",
                    {
                        "type": "control",
                        "streamNextOffset": final,
                        "upToDate": True,
                        "streamClosed": True,
                    },
                )
            ]
            assert reason.code == 1000


async def test_reconnecting_from_the_last_offset_loses_and_duplicates_nothing(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, sse_reconnect_interval="300ms")
    url = server.url("numbers")
    await create_stream(client, url, "application/json")
    count = 150
    reconnected = trio.Event()
    received: list[int] = []
    closes: list[CloseReason] = []

    async def reader() -> None:
        params = {"offset": "-1", "live": "ws"}
        while True:
            async with connect(ws_url(server, "numbers", **params)) as ws:
                messages, reason = await read_to_close(ws)
            closes.append(reason)
            assert messages and messages[-1][0] == "control"  # the server closes after a control
            pending: list[int] = []
            first_cursor = True
            for kind, value in messages:
                if kind == "data":
                    pending.extend(value)
                    continue
                received.extend(pending)  # data counts once its control has arrived
                pending = []
                params["offset"] = value["streamNextOffset"]
                if "streamCursor" in value:
                    if first_cursor and "cursor" in params:  # an echoed cursor is passed
                        assert int(value["streamCursor"]) > int(params["cursor"])
                    first_cursor = False
                    params["cursor"] = value["streamCursor"]
            if messages[-1][1].get("streamClosed"):
                return
            reconnected.set()

    async def writer() -> None:
        for n in range(count):
            if n == count // 2:
                await reconnected.wait()  # the second half goes to a later connection
            response = await client.post(url, content=json.dumps(n).encode(), headers=JSON)
            assert response.status_code == 204
        await client.post(url, headers={"Stream-Closed": "true"})

    with trio.fail_after(4 * WAIT):
        async with trio.open_nursery() as both:
            both.start_soon(reader)
            both.start_soon(writer)
    assert received == list(range(count))
    assert len(closes) >= 2
    for reason in closes[:-1]:
        assert reason.code == 1000
        assert reason.reason == "reconnect interval: resume from the last streamNextOffset"
    assert (closes[-1].code, closes[-1].reason) == (1000, "stream closed")


async def test_the_connection_ends_at_the_reconnect_interval(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, sse_reconnect_interval="500ms")
    tail = (await create_stream(client, server.url("quiet"))).headers["stream-next-offset"]
    with trio.fail_after(WAIT):
        async with connect(ws_url(server, "quiet", offset=tail, live="ws")) as ws:
            started = trio.current_time()
            messages, reason = await read_to_close(ws)
    assert trio.current_time() - started >= 0.45
    assert [kind for kind, _ in messages] == ["control"]
    assert reason.code == 1000
    assert reason.reason is not None and "reconnect interval" in reason.reason
    await wait_for_no_watchers(server)
    assert live_readers(server) == 0


async def test_refusals_are_http_responses_before_the_handshake(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings)
    await create_stream(client, server.url("here"), body=b"x")
    cases = [
        ("missing", {"offset": "-1", "live": "ws"}, 404),
        ("here", {"offset": "garbage", "live": "ws"}, 400),
        ("here", {"offset": format_offset(1000), "live": "ws"}, 400),  # beyond the tail
        ("here", {"live": "ws"}, 400),
        ("here", {"offset": "-1"}, 400),
        ("here", {"offset": "-1", "live": "sse"}, 400),
        ("__ds/subscriptions", {"offset": "-1", "live": "ws"}, 404),
    ]
    with trio.fail_after(WAIT):
        for name, params, status in cases:
            refused = await refusal(ws_url(server, name, **params))
            assert refused.status_code == status, (name, params)
            headers = refusal_headers(refused)
            assert_short_text_error(status, headers, (refused.body or b"").decode())
            assert headers["x-content-type-options"] == "nosniff"
        plain = await client.get(server.url("here"), params={"offset": "-1", "live": "ws"})
    assert plain.status_code == 400
    assert "WebSocket" in plain.text
    assert server.service.watchers.statistics().total == 0
    assert live_readers(server) == 0


async def test_websocket_reads_need_the_read_scope(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, tokens=TOKENS, sse_reconnect_interval="30s")
    url = server.url("events/a")
    write = {"Content-Type": "text/plain", "Authorization": f"Bearer {INGEST}"}
    tail = (await client.put(url, content=b"one", headers=write)).headers["stream-next-offset"]
    target = ws_url(server, "events/a", offset="-1", live="ws")
    with trio.fail_after(WAIT):
        missing = await refusal(target)
        assert missing.status_code == 401
        assert refusal_headers(missing)["www-authenticate"].startswith('Bearer realm="ds_trio"')
        invalid = await refusal(target, bearer(new_token()))
        assert invalid.status_code == 401
        assert 'error="invalid_token"' in refusal_headers(invalid)["www-authenticate"]
        no_read = await refusal(target, bearer(INGEST))
        assert no_read.status_code == 403
        assert 'error="insufficient_scope"' in refusal_headers(no_read)["www-authenticate"]
        async with connect(target, bearer(READER)) as ws:
            data, control = await next_batch(ws)
            assert (data, control["streamNextOffset"]) == ("one", tail)
            await wait_for_watchers(server, "events/a", 1)
            await client.post(url, content=b"two", headers=write)
            assert (await next_batch(ws))[0] == "two"
    await wait_for_no_watchers(server)


async def test_websocket_readers_count_against_the_live_reader_limits(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(
        nursery, store_settings, tokens=TOKENS, max_live_readers_per_client=2, max_live_readers=3,
        sse_reconnect_interval="30s",
    )  # fmt: skip
    url = server.url("live")
    created = await client.put(url, headers={**TEXT, "Authorization": f"Bearer {ALICE}"})
    tail = created.headers["stream-next-offset"]
    target = ws_url(server, "live", offset=tail, live="ws")
    with trio.fail_after(WAIT):
        async with (
            connect(target, bearer(ALICE)) as first,
            connect(target, bearer(ALICE)) as second,
        ):
            await first.get_message()
            await second.get_message()
            assert live_readers(server) == 2
            assert sample(server, "ds_trio_live_readers", mode="ws") == 2
            refused = await refusal(target, bearer(ALICE))
            assert refused.status_code == 429
            assert int(refusal_headers(refused)["retry-after"]) >= 1
            as_alice = {"Authorization": f"Bearer {ALICE}"}
            sse = await client.get(url, params={"offset": tail, "live": "sse"}, headers=as_alice)
            assert sse.status_code == 429  # one count for every kind of live read
            async with connect(target, bearer(BOB)) as third:
                await third.get_message()
                full = await refusal(target, bearer(BOB))
                assert full.status_code == 503
        await wait_until(lambda: live_readers(server) == 0)
    assert sample(server, "ds_trio_live_readers", mode="ws") == 0
    assert sample(server, "ds_trio_requests_total", method="GET", status="101") == 3


async def test_shutdown_releases_websocket_readers_at_once(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    # A long grace period: readers must be released by the shutdown itself.
    server = await start(
        nursery, store_settings, sse_reconnect_interval="30s", shutdown_grace="20s"
    )
    created = await create_stream(client, server.url("until-shutdown"))
    tail = created.headers["stream-next-offset"]
    ended: list[tuple[list[tuple[str, Any]], CloseReason]] = []

    async def reader() -> None:
        target = ws_url(server, "until-shutdown", offset=tail, live="ws")
        async with connect(target) as ws:
            ended.append(await read_to_close(ws))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as readers:
            for _ in range(3):
                readers.start_soon(reader)
            await wait_for_watchers(server, "until-shutdown", 3)
            started = trio.current_time()
            server.stop.set()
    assert trio.current_time() - started < 2
    assert len(ended) == 3
    for messages, reason in ended:
        assert [kind for kind, _ in messages] == ["control"]
        assert messages[0][1]["streamNextOffset"] == tail
        assert reason.code == 1001
    assert server.service.watchers.statistics().total == 0


async def test_readers_that_chatter_or_leave_are_released(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, sse_reconnect_interval="30s")
    url = server.url("chat")
    tail = (await create_stream(client, url)).headers["stream-next-offset"]
    with trio.fail_after(WAIT):
        # Far more messages than Hypercorn and Quart queue: the server drops them and reads on.
        async with connect(ws_url(server, "chat", offset=tail, live="ws")) as chatty:
            await chatty.get_message()
            for n in range(100):
                await chatty.send_message(f"hello {n}")
            await wait_for_watchers(server, "chat", 1)
            await client.post(url, content=b"news", headers=TEXT)
            assert (await next_batch(chatty))[0] == "news"
        # The client's close frame ends the read.
        await wait_for_no_watchers(server)
        assert live_readers(server) == 0
        # So does a connection dropped without one; no compression is agreed on the way.
        target = f"/v1/stream/chat?offset={tail}&live=ws"
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        stream, head = await raw_handshake(server, target, offer)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"sec-websocket-extensions" not in head.lower()
        await wait_for_watchers(server, "chat", 1)
        await stream.aclose()
        await wait_for_no_watchers(server)
        assert live_readers(server) == 0


async def test_pages_from_origins_outside_cors_origin_are_refused(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, cors_origin="https://app.example")
    tail = (await create_stream(client, server.url("o"))).headers["stream-next-offset"]
    target = ws_url(server, "o", offset=tail, live="ws")
    with trio.fail_after(WAIT):
        refused = await refusal(target, [(b"Origin", b"https://elsewhere.example")])
        assert refused.status_code == 403
        for headers in ([(b"Origin", b"https://app.example")], None):  # allowed; not a browser
            async with connect(target, headers) as ws:
                _, control = await next_batch(ws)
                assert control["streamNextOffset"] == tail


async def test_text_batches_split_no_character(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    server = await start(nursery, store_settings, max_read_bytes=16, sse_reconnect_interval="30s")
    text = "a\u00e9\u20ac\U0001f600" * 12  # 1-, 2-, 3- and 4-byte characters, 120 bytes
    created = await create_stream(client, server.url("utf8"), body=text.encode())
    tail = created.headers["stream-next-offset"]
    received = ""
    with trio.fail_after(WAIT):
        async with connect(ws_url(server, "utf8", offset="-1", live="ws")) as ws:
            while True:
                data, control = await next_batch(ws)
                assert data is not None
                assert len(data.encode()) <= 16
                received += data
                if control.get("upToDate"):
                    break
    assert received == text
    assert control["streamNextOffset"] == tail


async def test_a_reader_that_stops_reading_holds_one_batch_not_the_stream(
    nursery: trio.Nursery, store_settings: dict[str, object], client: httpx.AsyncClient
) -> None:
    batch = 64 * 1024
    server = await start(
        nursery, store_settings, max_read_bytes=batch, sse_reconnect_interval="120s"
    )
    url = server.url("firehose")
    await create_stream(client, url, "application/octet-stream")
    # What the kernel may hold for the server's socket, plus a few batches in the client's
    # small buffers and queue and one in the server's send: the most a stalled reader costs.
    send_buffer = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    bound = send_buffer + 8 * batch
    chunk = 256 * 1024
    chunks = [n.to_bytes(4, "big") * (chunk // 4) for n in range(2 * bound // chunk + 1)]
    expected = b"".join(chunks)

    target = ws_url(server, "firehose", offset="-1", live="ws")
    with trio.fail_after(6 * WAIT):
        async with connect(target, receive_buffer=4096, message_queue_size=1) as slow:
            assert (await next_batch(slow))[1]["upToDate"] is True
            before = sample(server, "ds_trio_bytes_out_total")
            for piece in chunks:  # the slow reader reads none of it, for now
                response = await client.post(url, content=piece, headers=BINARY)
                assert response.status_code == 204
            assert sample(server, "ds_trio_bytes_out_total") - before <= bound

            # Meanwhile the server serves everyone else.
            assert (await client.get(f"{server.base_url}/healthz")).status_code == 200
            async with connect(target) as other:
                caught_up = b""
                while True:
                    data, control = await next_batch(other)
                    caught_up += data
                    if control.get("upToDate"):
                        break
            assert caught_up == expected

            # The slow reader resumes where it stopped and gets every byte once, in order.
            received = b""
            while len(received) < len(expected):
                data, control = await next_batch(slow)
                assert data is not None and len(data) <= batch
                received += data
            assert received == expected
            assert control["upToDate"] is True
    await wait_for_no_watchers(server)
    assert live_readers(server) == 0
