"""Request smuggling: ambiguously framed requests are refused and end the connection.

Each refused request is an append to stream `outer` whose body, under some
other reading of its framing, holds a second request: an append to stream
`victim`. The raw bytes go on a plain TCP connection; the test asserts the
one status the server answers, that it then closes the connection, and that
neither stream changed, so no smuggled request ran. An offer to upgrade to
cleartext HTTP/2 (h2c) is ignored: the connection stays HTTP/1.1.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import h11
import hypercorn.trio
import pytest
import trio
from h2.config import H2Configuration
from h2.connection import H2Connection
from hypercorn.config import Config as HyperConfig
from quart import websocket
from quart_trio import QuartTrio
from trio_websocket import open_websocket_url

from ds_trio.http import strict_h11

from .helpers import create_stream

if TYPE_CHECKING:
    import httpx

    from ..conftest import RunningServer

TEXT: Final = {"Content-Type": "text/plain"}
INITIAL: Final = b"start"
CLOSE_TIMEOUT: Final = 5  # seconds for the server to answer and close
STATUS_LINE: Final = re.compile(rb"HTTP/1\.1 (\d{3}) ")

SMUGGLED: Final = (
    b"POST /v1/stream/victim HTTP/1.1\r\nHost: smuggled\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 8\r\n\r\nSMUGGLED"
)
# An empty chunked body, then the smuggled request.
EMPTY_CHUNKED_THEN_SMUGGLED: Final = b"0\r\n\r\n" + SMUGGLED
TE_CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"


def outer_request(framing: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    """An append to `outer`: `framing` is its framing header lines, line ends included."""
    return (
        b"POST /v1/stream/outer HTTP/" + version + b"\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: text/plain\r\n" + framing + b"\r\n" + body
    )


def length(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n" % len(body)


@dataclass(frozen=True)
class Refused:
    """A request the server must refuse with `status` and then close the connection."""

    request: bytes
    status: int = 400


REFUSED: Final = {
    # Both framings: a proxy going by Content-Length forwards the smuggled
    # request as body; read as chunked, it is a second request.
    "cl-then-te": Refused(
        outer_request(length(EMPTY_CHUNKED_THEN_SMUGGLED) + TE_CHUNKED, EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    "te-then-cl": Refused(
        outer_request(TE_CHUNKED + length(EMPTY_CHUNKED_THEN_SMUGGLED), EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    # Content-Length spelt so that a proxy may read no (or another) length.
    "cl-duplicate": Refused(outer_request(length(SMUGGLED) * 2, SMUGGLED)),
    "cl-list": Refused(
        outer_request(b"Content-Length: %d, %d\r\n" % ((len(SMUGGLED),) * 2), SMUGGLED)
    ),
    "cl-conflicting": Refused(outer_request(b"Content-Length: 0\r\n" + length(SMUGGLED), SMUGGLED)),
    "cl-leading-zero": Refused(outer_request(b"Content-Length: 0%d\r\n" % len(SMUGGLED), SMUGGLED)),
    "cl-beyond-64-bits": Refused(
        outer_request(b"Content-Length: %d\r\n" % (2**64 + len(SMUGGLED)), SMUGGLED)
    ),
    "cl-obs-fold": Refused(outer_request(b"Content-Length:\r\n %d\r\n" % len(SMUGGLED), SMUGGLED)),
    "cl-signed": Refused(outer_request(b"Content-Length: +%d\r\n" % len(SMUGGLED), SMUGGLED)),
    # Transfer-Encoding spelt so that a proxy may not see it.
    "te-obs-fold": Refused(
        outer_request(b"Transfer-Encoding:\r\n chunked\r\n", EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    "te-after-bare-lf": Refused(
        outer_request(b"X-Note: a\n" + TE_CHUNKED, EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    "te-head-ends-in-bare-lf": Refused(
        outer_request(TE_CHUNKED, b"").removesuffix(b"\r\n") + b"\n" + EMPTY_CHUNKED_THEN_SMUGGLED
    ),
    "te-space-before-colon": Refused(
        outer_request(b"Transfer-Encoding : chunked\r\n", EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    "te-vertical-tab": Refused(
        outer_request(b"Transfer-Encoding: \x0bchunked\r\n", EMPTY_CHUNKED_THEN_SMUGGLED)
    ),
    "te-http-1.0": Refused(outer_request(TE_CHUNKED, b"5\r\nhello\r\n0\r\n\r\n", b"1.0")),
    # Codings other than chunked: h11's 501.
    "te-gzip-chunked": Refused(
        outer_request(b"Transfer-Encoding: gzip, chunked\r\n", EMPTY_CHUNKED_THEN_SMUGGLED), 501
    ),
    "te-chunked-twice": Refused(
        outer_request(b"Transfer-Encoding: chunked, chunked\r\n", EMPTY_CHUNKED_THEN_SMUGGLED), 501
    ),
    "te-two-lines": Refused(outer_request(TE_CHUNKED * 2, EMPTY_CHUNKED_THEN_SMUGGLED), 501),
    # Chunk sizes other parsers read as 5 (or as the end of the body).
    "chunk-size-not-hex": Refused(
        outer_request(TE_CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
    ),
    "chunk-size-negative": Refused(
        outer_request(TE_CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
    ),
    "chunk-size-0x": Refused(outer_request(TE_CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    "chunk-size-over-80-bits": Refused(
        outer_request(TE_CHUNKED, b"1" + b"0" * 20 + b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED)
    ),
    "chunk-size-bare-lf": Refused(outer_request(TE_CHUNKED, b"5\nhello\r\n0\r\n\r\n" + SMUGGLED)),
    "chunk-data-without-crlf": Refused(
        outer_request(TE_CHUNKED, b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED)
    ),
}


@dataclass
class Exchange:
    """What came back for raw bytes sent on a new connection."""

    statuses: list[int]
    closed: bool  # the server closed the connection within CLOSE_TIMEOUT
    data: bytes


async def exchange(server: RunningServer, data: bytes, *, half_close: bool = False) -> Exchange:
    """Send `data` on a new connection and read until the server closes it (bounded)."""
    parts = urlsplit(server.base_url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    received = bytearray()
    closed = False
    with trio.move_on_after(CLOSE_TIMEOUT):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            await stream.send_all(data)
            if half_close:
                await stream.send_eof()
            try:
                while chunk := await stream.receive_some():
                    received += chunk
            except trio.BrokenResourceError:  # reset instead of closed: closed all the same
                pass
            closed = True
    statuses = [int(status) for status in STATUS_LINE.findall(received)]
    return Exchange(statuses, closed, bytes(received))


@pytest.fixture(name="streams")
async def _streams(server: RunningServer, client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Streams `outer` and `victim`, each holding INITIAL."""
    for name in ("outer", "victim"):
        await create_stream(client, server.url(name), body=INITIAL)
    yield


async def content(client: httpx.AsyncClient, server: RunningServer, name: str) -> bytes:
    response = await client.get(server.url(name))
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
async def test_ambiguous_framing_is_refused_and_closes(
    server: RunningServer, client: httpx.AsyncClient, streams: None, case: Refused
) -> None:
    result = await exchange(server, case.request)
    assert result.statuses == [case.status]
    assert result.closed, "the server kept the connection open"
    assert await content(client, server, "victim") == INITIAL, "a smuggled request ran"
    assert await content(client, server, "outer") == INITIAL


async def test_chunk_size_beyond_64_bits_swallows_the_rest(
    server: RunningServer, client: httpx.AsyncClient, streams: None
) -> None:
    # 2**64 + 5: a parser that wraps around reads a 5-byte chunk. h11 reads a
    # chunk that never ends, so what follows is body, never a request.
    body = b"10000000000000005\r\nhello\r\n0\r\n\r\n" + SMUGGLED
    result = await exchange(server, outer_request(TE_CHUNKED, body), half_close=True)
    assert result.statuses == [400]
    assert result.closed
    assert await content(client, server, "victim") == INITIAL, "a smuggled request ran"
    assert await content(client, server, "outer") == INITIAL


ACCEPTED: Final = {
    "cl-ows": (b"Content-Length: \t3 \r\n", b"-a-"),
    "te-ows-and-case": (b"Transfer-Encoding:\tChunked \r\n", b"3\r\n-a-\r\n0\r\n\r\n"),
    "chunk-size-leading-zeros": (TE_CHUNKED, b"003\r\n-a-\r\n0\r\n\r\n"),
    "chunk-extension-and-trailer": (TE_CHUNKED, b"3;note=x\r\n-a-\r\n0\r\nX-Check: t\r\n\r\n"),
}


@pytest.mark.parametrize(("framing", "body"), ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_well_formed_framing_is_accepted(
    server: RunningServer, client: httpx.AsyncClient, streams: None, framing: bytes, body: bytes
) -> None:
    result = await exchange(server, outer_request(framing + b"Connection: close\r\n", body))
    assert result.statuses == [204]
    assert await content(client, server, "outer") == INITIAL + b"-a-"


async def test_pipelined_chunked_and_length_appends_on_one_connection(
    server: RunningServer, client: httpx.AsyncClient, streams: None
) -> None:
    requests = (
        outer_request(TE_CHUNKED, b"3\r\n-a-\r\n0\r\n\r\n")
        + outer_request(length(b"-b-"), b"-b-")
        + outer_request(length(b"-c-") + b"Connection: close\r\n", b"-c-")
    )
    result = await exchange(server, requests)
    assert result.statuses == [204, 204, 204]
    assert result.closed
    assert await content(client, server, "outer") == INITIAL + b"-a--b--c-"


async def test_http_1_0_with_content_length_is_served(
    server: RunningServer, client: httpx.AsyncClient, streams: None
) -> None:
    result = await exchange(server, outer_request(length(b"-a-"), b"-a-", b"1.0"))
    assert result.statuses == [204]
    assert result.closed
    assert await content(client, server, "outer") == INITIAL + b"-a-"


async def test_httpx_streaming_upload_is_chunked_and_accepted(
    server: RunningServer, client: httpx.AsyncClient, streams: None
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"-a-"
        yield b"-b-"

    response = await client.post(server.url("outer"), content=pieces(), headers=TEXT)
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 204, response.text
    assert await content(client, server, "outer") == INITIAL + b"-a--b-"


H2C_UPGRADE: Final = (
    b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)
H2C_SPELLINGS: Final = {"h2c": b"h2c", "nbsp-upper-case": b"\xa0H2C"}  # Hypercorn takes both


@pytest.mark.parametrize("h2c", H2C_SPELLINGS.values(), ids=H2C_SPELLINGS.keys())
async def test_h2c_upgrade_is_ignored_and_the_connection_stays_http_1_1(
    server: RunningServer, client: httpx.AsyncClient, streams: None, h2c: bytes
) -> None:
    # Behind a proxy that forwards Upgrade, a 101 here would make the proxied
    # connection HTTP/2 straight to this server, past the proxy's rules.
    read = b"GET /v1/stream/outer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    upgrade = b"Upgrade: " + h2c + b"\r\n" + H2C_UPGRADE
    result = await exchange(server, read + upgrade + b"\r\n" + read + b"Connection: close\r\n\r\n")
    assert result.statuses == [200, 200]
    assert result.data.startswith(b"HTTP/1.1 200 ")
    assert result.data.count(b"\r\n\r\n" + INITIAL) == 2
    assert result.closed


async def test_h2c_upgrade_with_a_body_appends_over_http_1_1(
    server: RunningServer, client: httpx.AsyncClient, streams: None
) -> None:
    requests = outer_request(b"Upgrade: h2c\r\n" + H2C_UPGRADE + length(b"-a-"), b"-a-")
    requests += outer_request(length(b"-b-") + b"Connection: close\r\n", b"-b-")
    result = await exchange(server, requests)
    assert result.statuses == [204, 204]
    assert result.closed
    assert await content(client, server, "outer") == INITIAL + b"-a--b-"


def parse_request_head(head: bytes) -> h11.Request:
    strict_h11.install()
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    request = connection.next_event()
    assert isinstance(request, h11.Request)
    return request


def test_other_upgrade_offers_are_kept() -> None:
    head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: %s\r\n" + H2C_UPGRADE + b"\r\n"
    websocket_only = list(parse_request_head(head % b"websocket").headers)
    assert (b"upgrade", b"websocket") in websocket_only
    assert (b"http2-settings", b"AAMAAABkAARAAAAAAAIAAAAA") in websocket_only
    without_h2c = list(parse_request_head(head % b"h2c, websocket").headers)
    assert [value for name, value in without_h2c if name == b"upgrade"] == [b"websocket"]
    assert b"http2-settings" not in [name for name, _ in without_h2c]


async def test_websocket_handshake_still_reaches_hypercorn(nursery: trio.Nursery) -> None:
    strict_h11.install()
    app = QuartTrio(__name__)

    @app.websocket("/ws")
    async def greet() -> None:
        await websocket.send("hello")

    hyper = HyperConfig()
    hyper.bind = ["127.0.0.1:0"]
    urls = await nursery.start(partial(hypercorn.trio.serve, app, hyper))
    with trio.fail_after(CLOSE_TIMEOUT):
        url = urls[0].replace("http://", "ws://", 1) + "/ws"
        async with open_websocket_url(url) as connection:
            assert await connection.get_message() == "hello"


def test_install_is_idempotent() -> None:
    strict_h11.install()
    reader = h11._readers.READERS[strict_h11.REQUEST_HEAD]
    strict_h11.install()
    assert h11._readers.READERS[strict_h11.REQUEST_HEAD] is reader


def test_install_refuses_unknown_h11_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(h11._readers.READERS, strict_h11.REQUEST_HEAD, lambda buffer: None)
    with pytest.raises(strict_h11.H11InternalsChanged):
        strict_h11.install()


def test_received_responses_keep_h11_leniency() -> None:
    # httpx reads responses with h11 in this process (webhooks, forwarding):
    # only request heads are read strictly.
    strict_h11.install()
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    response = connection.next_event()
    assert isinstance(response, h11.Response)
    assert (b"x-folded", b"a b") in list(response.headers)
    body = connection.next_event()
    assert isinstance(body, h11.Data) and body.data == b"abc"


@pytest.mark.parametrize("path", [b"/v1/stream/x", b"/\xff"])
async def test_http2_prior_knowledge_is_refused_and_the_server_lives(
    server: RunningServer, client: httpx.AsyncClient, path: bytes
) -> None:
    h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    h2.initiate_connection()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", path)]
    h2.send_headers(1, request, end_stream=True)
    port = int(server.base_url.rsplit(":", 1)[1])
    received = b""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(h2.data_to_send())
            while chunk := await stream.receive_some(4096):
                received += chunk
    assert received.startswith(b"HTTP/1.1 400 "), received[:80]
    assert (await client.get(f"{server.base_url}/healthz")).status_code == 200
