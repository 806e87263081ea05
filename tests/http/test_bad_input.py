"""Bad input: every malformed request gets a short plain-text 4xx, never a 500.

Requests go through `raw_request`, so the exact target and header bytes in
each row are what reaches the server (httpx would normalise dot segments and
merge duplicate query parameters' spelling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import trio

from ..conftest import RunningServer, start_server
from .helpers import (
    SECURITY_HEADERS,
    RawConnection,
    assert_short_text_error,
    create_stream,
    raw_request,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

ROOT = "/v1/stream"
TEXT = f"{ROOT}/text"  # text/plain, holds b"hello"
JSON = f"{ROOT}/json"  # application/json, holds [1]
# Targets may name "{tail}" (TEXT's tail offset) and "{beyond}" (an offset this
# server minted, past TEXT's tail); offsets are opaque, so none is spelled here.
TEXT_TYPE = ("Content-Type", "text/plain")
JSON_TYPE = ("Content-Type", "application/json")

Header = tuple[str, str | bytes]

# (id, method, target, headers, body, status)
BAD_REQUESTS: list[tuple[str, str, str, list[Header], bytes, int]] = [
    # Offsets and the live parameter.
    ("offset-junk", "GET", f"{TEXT}?offset=abc", [], b"", 400),
    ("offset-empty", "GET", f"{TEXT}?offset=", [], b"", 400),
    ("offset-minus-two", "GET", f"{TEXT}?offset=-2", [], b"", 400),
    ("offset-short", "GET", f"{TEXT}?offset=5", [], b"", 400),
    ("offset-long", "GET", f"{TEXT}?offset=0{{tail}}", [], b"", 400),
    ("offset-suffix", "GET", f"{TEXT}?offset={{tail}}0", [], b"", 400),
    ("offset-space", "GET", f"{TEXT}?offset=%20{{tail}}", [], b"", 400),
    ("offset-signed", "GET", f"{TEXT}?offset=%2B5", [], b"", 400),
    ("offset-nul", "GET", f"{TEXT}?offset=%00", [], b"", 400),
    ("offset-not-utf8", "GET", f"{TEXT}?offset=%ff", [], b"", 400),
    ("offset-unicode-digits", "GET", f"{TEXT}?offset=" + "%EF%BC%90" * 33, [], b"", 400),
    ("offset-beyond-tail", "GET", f"{TEXT}?offset={{beyond}}", [], b"", 400),
    ("offset-twice", "GET", f"{TEXT}?offset=-1&offset=-1", [], b"", 400),
    ("offset-twice-live", "GET", f"{TEXT}?offset=-1&live=sse&offset=now", [], b"", 400),
    ("live-unknown", "GET", f"{TEXT}?offset=-1&live=poll", [], b"", 400),
    ("live-empty", "GET", f"{TEXT}?offset=-1&live=", [], b"", 400),
    ("live-case", "GET", f"{TEXT}?offset=-1&live=SSE", [], b"", 400),
    ("live-twice", "GET", f"{TEXT}?offset=-1&live=sse&live=sse", [], b"", 400),
    ("long-poll-no-offset", "GET", f"{TEXT}?live=long-poll", [], b"", 400),
    ("sse-no-offset", "GET", f"{TEXT}?live=sse", [], b"", 400),
    ("long-poll-bad-offset", "GET", f"{TEXT}?offset=x&live=long-poll", [], b"", 400),
    ("sse-bad-offset", "GET", f"{TEXT}?offset=x&live=sse", [], b"", 400),
    ("long-poll-beyond-tail", "GET", f"{TEXT}?offset={{beyond}}&live=long-poll", [], b"", 400),
    ("sse-beyond-tail", "GET", f"{TEXT}?offset={{beyond}}&live=sse", [], b"", 400),
    ("cursor-twice", "GET", f"{TEXT}?offset=-1&live=long-poll&cursor=1&cursor=2", [], b"", 400),
    ("missing-stream", "GET", f"{ROOT}/nope", [], b"", 404),
    ("missing-stream-long-poll", "GET", f"{ROOT}/nope?offset=-1&live=long-poll", [], b"", 404),
    ("missing-stream-sse", "GET", f"{ROOT}/nope?offset=-1&live=sse", [], b"", 404),
    ("post-missing-stream", "POST", f"{ROOT}/nope", [TEXT_TYPE], b"x", 404),
    ("delete-missing-stream", "DELETE", f"{ROOT}/nope", [], b"", 404),
    # TTL and Expires-At on create.
    ("ttl-junk", "PUT", f"{ROOT}/new", [("Stream-TTL", "abc")], b"", 400),
    ("ttl-negative", "PUT", f"{ROOT}/new", [("Stream-TTL", "-1")], b"", 400),
    ("ttl-plus", "PUT", f"{ROOT}/new", [("Stream-TTL", "+5")], b"", 400),
    ("ttl-leading-zero", "PUT", f"{ROOT}/new", [("Stream-TTL", "05")], b"", 400),
    ("ttl-decimal", "PUT", f"{ROOT}/new", [("Stream-TTL", "1.5")], b"", 400),
    ("ttl-exponent", "PUT", f"{ROOT}/new", [("Stream-TTL", "1e3")], b"", 400),
    ("ttl-empty", "PUT", f"{ROOT}/new", [("Stream-TTL", "")], b"", 400),
    ("ttl-huge", "PUT", f"{ROOT}/new", [("Stream-TTL", "9" * 40)], b"", 400),
    ("ttl-obs-text", "PUT", f"{ROOT}/new", [("Stream-TTL", b"\xff")], b"", 400),
    ("ttl-twice", "PUT", f"{ROOT}/new", [("Stream-TTL", "5"), ("Stream-TTL", "5")], b"", 400),
    ("expires-junk", "PUT", f"{ROOT}/new", [("Stream-Expires-At", "tomorrow")], b"", 400),
    (
        "expires-no-zone",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Expires-At", "2030-01-01T00:00:00")],
        b"",
        400,
    ),
    (
        "expires-space",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Expires-At", "2030-01-01 00:00:00Z")],
        b"",
        400,
    ),
    (
        "expires-month-13",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Expires-At", "2030-13-01T00:00:00Z")],
        b"",
        400,
    ),
    (
        "expires-feb-30",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Expires-At", "2030-02-30T00:00:00Z")],
        b"",
        400,
    ),
    (
        "expires-bad-offset",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Expires-At", "2030-01-01T00:00:00+24:00")],
        b"",
        400,
    ),
    ("expires-epoch", "PUT", f"{ROOT}/new", [("Stream-Expires-At", "1893456000")], b"", 400),
    (
        "ttl-and-expires",
        "PUT",
        f"{ROOT}/new",
        [("Stream-TTL", "60"), ("Stream-Expires-At", "2030-01-01T00:00:00Z")],
        b"",
        400,
    ),
    # Forks.
    ("fork-offset-alone", "PUT", f"{ROOT}/new", [("Stream-Fork-Offset", "{tail}")], b"", 400),
    ("fork-sub-offset-alone", "PUT", f"{ROOT}/new", [("Stream-Fork-Sub-Offset", "1")], b"", 400),
    (
        "fork-outside-root",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Forked-From", "/elsewhere/text")],
        b"",
        400,
    ),
    ("fork-relative", "PUT", f"{ROOT}/new", [("Stream-Forked-From", "text")], b"", 400),
    ("fork-dot-dot", "PUT", f"{ROOT}/new", [("Stream-Forked-From", f"{ROOT}/a/../text")], b"", 400),
    ("fork-nul", "PUT", f"{ROOT}/new", [("Stream-Forked-From", f"{ROOT}/%00")], b"", 400),
    (
        "fork-missing-source",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Forked-From", f"{ROOT}/nope")],
        b"",
        404,
    ),
    ("fork-itself", "PUT", f"{ROOT}/new", [("Stream-Forked-From", f"{ROOT}/new")], b"", 404),
    (
        "fork-twice",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Forked-From", TEXT), ("Stream-Forked-From", TEXT)],
        b"",
        400,
    ),
    (
        "fork-bad-offset",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Forked-From", TEXT), ("Stream-Fork-Offset", "x")],
        b"",
        400,
    ),
    (
        "fork-offset-beyond-tail",
        "PUT",
        f"{ROOT}/new",
        [("Stream-Forked-From", TEXT), ("Stream-Fork-Offset", "{beyond}")],
        b"",
        400,
    ),
    *[
        (
            f"fork-sub-offset-{label}",
            "PUT",
            f"{ROOT}/new",
            [("Stream-Forked-From", TEXT), ("Stream-Fork-Sub-Offset", value)],
            b"",
            400,
        )
        for label, value in [("junk", "x"), ("negative", "-1"), ("past-data", "99")]
    ],
    ("fork-other-type", "PUT", f"{ROOT}/new", [("Stream-Forked-From", TEXT), JSON_TYPE], b"", 409),
    # Content types and bodies.
    ("put-content-type-junk", "PUT", f"{ROOT}/new", [("Content-Type", "garbage")], b"", 400),
    ("put-content-type-no-subtype", "PUT", f"{ROOT}/new", [("Content-Type", "text/")], b"", 400),
    ("put-content-type-no-type", "PUT", f"{ROOT}/new", [("Content-Type", "/plain")], b"", 400),
    ("put-content-type-space", "PUT", f"{ROOT}/new", [("Content-Type", "te xt/plain")], b"", 400),
    (
        "put-content-type-obs-text",
        "PUT",
        f"{ROOT}/new",
        [("Content-Type", b"text/pl\xe9in")],
        b"",
        400,
    ),
    ("put-content-type-twice", "PUT", f"{ROOT}/new", [TEXT_TYPE, TEXT_TYPE], b"", 400),
    ("put-invalid-json", "PUT", f"{ROOT}/new", [JSON_TYPE], b"{", 400),
    ("put-json-trailing", "PUT", f"{ROOT}/new", [JSON_TYPE], b"[1] [2]", 400),
    ("post-empty-body", "POST", TEXT, [TEXT_TYPE], b"", 400),
    ("post-empty-body-no-type", "POST", TEXT, [], b"", 400),
    ("post-no-content-type", "POST", TEXT, [], b"x", 400),
    ("post-blank-content-type", "POST", TEXT, [("Content-Type", "")], b"x", 400),
    ("post-content-type-junk", "POST", TEXT, [("Content-Type", "garbage")], b"x", 400),
    ("post-content-type-twice", "POST", TEXT, [TEXT_TYPE, TEXT_TYPE], b"x", 400),
    ("post-content-type-mismatch", "POST", TEXT, [JSON_TYPE], b"1", 409),
    ("post-json-invalid", "POST", JSON, [JSON_TYPE], b"{bad", 400),
    ("post-json-empty-array", "POST", JSON, [JSON_TYPE], b"[]", 400),
    ("post-json-blank-array", "POST", JSON, [JSON_TYPE], b" [ ] ", 400),
    ("post-json-whitespace", "POST", JSON, [JSON_TYPE], b"  \n ", 400),
    ("post-json-unclosed-array", "POST", JSON, [JSON_TYPE], b"[1, 2", 400),
    ("post-json-trailing-comma", "POST", JSON, [JSON_TYPE], b"[1, 2,]", 400),
    ("post-json-two-values", "POST", JSON, [JSON_TYPE], b"1 2", 400),
    ("post-json-nan", "POST", JSON, [JSON_TYPE], b"NaN", 400),
    ("post-json-infinity", "POST", JSON, [JSON_TYPE], b"[-Infinity]", 400),
    ("post-json-not-utf8", "POST", JSON, [JSON_TYPE], b'"\xff"', 400),
    ("post-json-deep", "POST", JSON, [JSON_TYPE], b"[" * 100_000 + b"]" * 100_000, 400),
    # Idempotent producer headers.
    ("producer-id-only", "POST", TEXT, [TEXT_TYPE, ("Producer-Id", "p")], b"x", 400),
    (
        "producer-no-seq",
        "POST",
        TEXT,
        [TEXT_TYPE, ("Producer-Id", "p"), ("Producer-Epoch", "0")],
        b"x",
        400,
    ),
    (
        "producer-no-id",
        "POST",
        TEXT,
        [TEXT_TYPE, ("Producer-Epoch", "0"), ("Producer-Seq", "0")],
        b"x",
        400,
    ),
    *[
        (
            f"producer-{field.lower()}-{label}",
            "POST",
            TEXT,
            [
                TEXT_TYPE,
                ("Producer-Id", "p"),
                ("Producer-Epoch", value if field == "Epoch" else "0"),
                ("Producer-Seq", value if field == "Seq" else "0"),
            ],
            b"x",
            400,
        )
        for field in ("Epoch", "Seq")
        for label, value in [
            ("junk", "abc"),
            ("negative", "-1"),
            ("leading-zero", "01"),
            ("decimal", "1.0"),
            ("empty", ""),
            ("too-big", str(2**53)),
            ("unicode-digit", "\u0661".encode()),
        ]
    ],
    (
        "producer-empty-id",
        "POST",
        TEXT,
        [TEXT_TYPE, ("Producer-Id", ""), ("Producer-Epoch", "0"), ("Producer-Seq", "0")],
        b"x",
        400,
    ),
    (
        "producer-id-twice",
        "POST",
        TEXT,
        [
            TEXT_TYPE,
            ("Producer-Id", "p"),
            ("Producer-Id", "q"),
            ("Producer-Epoch", "0"),
            ("Producer-Seq", "0"),
        ],
        b"x",
        400,
    ),
    (
        "producer-first-seq-not-zero",
        "POST",
        TEXT,
        [TEXT_TYPE, ("Producer-Id", "p"), ("Producer-Epoch", "0"), ("Producer-Seq", "1")],
        b"x",
        409,
    ),
    # Stream-Seq.
    ("stream-seq-empty", "POST", TEXT, [TEXT_TYPE, ("Stream-Seq", "")], b"x", 400),
    ("stream-seq-too-long", "POST", TEXT, [TEXT_TYPE, ("Stream-Seq", "a" * 2000)], b"x", 400),
    (
        "stream-seq-twice",
        "POST",
        TEXT,
        [TEXT_TYPE, ("Stream-Seq", "a"), ("Stream-Seq", "b")],
        b"x",
        400,
    ),
]

BAD_PATHS: list[tuple[str, str]] = [
    ("dot-dot", "a/../b"),
    ("dot-dot-only", ".."),
    ("dot-dot-trailing", "a/.."),
    ("dot", "./a"),
    ("encoded-dot-dot", "%2e%2e"),
    ("encoded-dot-dot-upper", "%2E%2E/a"),
    ("encoded-dot-dot-mixed", "a/.%2e/b"),
    ("encoded-dot", "a/%2e"),
    ("nul", "%00"),
    ("nul-inside", "a%00b"),
    ("control", "a%1bb"),
    ("delete-char", "a%7f"),
    ("c1-control", "a%c2%85"),
    ("newline", "a%0ab"),  # 404: the route's path converter does not match "\n"
    ("bad-escape", "a%zz"),
    ("truncated-escape", "a%2"),
    ("bare-percent", "a%"),
    ("half-escape", "%g0"),
    ("not-utf8", "%ff"),
    ("truncated-utf8", "a%c3"),
    ("overlong-utf8", "%c0%af"),
    ("surrogate-utf8", "%ed%a0%80"),
    ("empty-segment", "a//b"),
    ("leading-empty-segment", "/a"),  # 404: the route needs a first name character
    ("trailing-slash", "a/"),
    ("overlong-name", "x" * 1025),
    ("overlong-encoded-name", "%41" * 1025),
    ("too-many-segments", "/".join(["s"] * 33)),
]


@dataclass(frozen=True)
class Seeded:
    """A server holding TEXT, JSON and a longer stream, with offsets to use."""

    server: RunningServer
    tail: str  # TEXT's tail
    beyond: str  # a real offset past TEXT's tail

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def url(self, name: str) -> str:
        return self.server.url(name)


@pytest.fixture(name="seeded")
async def _seeded(server: RunningServer, client: httpx.AsyncClient) -> Seeded:
    text = await create_stream(client, server.url("text"), body=b"hello")
    await create_stream(client, server.url("json"), "application/json", b"[1]")
    longer = await create_stream(client, server.url("longer"), body=b"x" * 100)
    return Seeded(server, text.headers["stream-next-offset"], longer.headers["stream-next-offset"])


def _check_error(status: int, headers: dict[str, str], body: str, expected: int) -> None:
    assert status == expected, (status, body)
    assert_short_text_error(status, headers, body)
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status"),
    [row[1:] for row in BAD_REQUESTS],
    ids=[row[0] for row in BAD_REQUESTS],
)
async def test_bad_request_gets_short_text_4xx(
    seeded: Seeded,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    status: int,
) -> None:
    offsets = {"tail": seeded.tail, "beyond": seeded.beyond}
    target = target.format(**offsets)
    headers = [(k, v.format(**offsets) if isinstance(v, str) else v) for k, v in headers]
    response = await raw_request(seeded.base_url, method, target, headers, body)
    _check_error(response.status, response.headers, response.text, status)
    # Nothing was created, appended or removed.
    text = await raw_request(seeded.base_url, "GET", f"{TEXT}?offset=-1")
    assert (text.status, text.body) == (200, b"hello")
    json_read = await raw_request(seeded.base_url, "GET", f"{JSON}?offset=-1")
    assert (json_read.status, json_read.body) == (200, b"[1]")
    assert (await raw_request(seeded.base_url, "HEAD", f"{ROOT}/new")).status == 404
    assert len(seeded.server.service.store) == 3


@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "DELETE", "HEAD"])
@pytest.mark.parametrize(("path"), [p for _, p in BAD_PATHS], ids=[i for i, _ in BAD_PATHS])
async def test_bad_stream_path_gets_4xx(server: RunningServer, method: str, path: str) -> None:
    headers = [TEXT_TYPE] if method in ("PUT", "POST") else []
    body = b"x" if method == "POST" else b""
    response = await raw_request(server.base_url, method, f"{ROOT}/{path}", headers, body)
    expected = 404 if path in ("a%0ab", "/a") else 400
    if method == "HEAD":
        assert response.status == expected
        assert response.body == b""
    else:
        _check_error(response.status, response.headers, response.text, expected)
    assert len(server.service.store) == 0


@pytest.mark.parametrize("target", [ROOT, f"{ROOT}/", "/", "/v1", "/v1/streams/a", "/nope"])
async def test_paths_outside_the_stream_root_get_404(server: RunningServer, target: str) -> None:
    for method in ("GET", "PUT", "POST"):
        response = await raw_request(server.base_url, method, target, [TEXT_TYPE], b"x")
        _check_error(response.status, response.headers, response.text, 404)


async def test_longest_allowed_name_works(server: RunningServer) -> None:
    name = "x" * 1024
    response = await raw_request(server.base_url, "PUT", f"{ROOT}/{name}", [TEXT_TYPE])
    assert response.status == 201
    deep = "/".join(["s"] * 32)
    assert (await raw_request(server.base_url, "PUT", f"{ROOT}/{deep}", [TEXT_TYPE])).status == 201


async def test_stream_seq_regression_is_409(seeded: Seeded, client: httpx.AsyncClient) -> None:
    url = seeded.url("text")
    headers = {"Content-Type": "text/plain"}
    assert (
        await client.post(url, content=b"1", headers={**headers, "Stream-Seq": "b"})
    ).status_code == 204
    for seq in ("b", "a", "B", "ab"):  # equal, lower, byte-wise lower, prefix-lower
        response = await client.post(url, content=b"2", headers={**headers, "Stream-Seq": seq})
        _check_error(response.status_code, dict(response.headers), response.text, 409)
    response = await client.post(url, content=b"3", headers={**headers, "Stream-Seq": "c"})
    assert response.status_code == 204
    read = await client.get(url, params={"offset": "-1"})
    assert read.content == b"hello13"


async def test_append_to_closed_stream_is_409_with_final_offset(
    seeded: Seeded, client: httpx.AsyncClient
) -> None:
    url = seeded.url("text")
    closed = await client.post(url, headers={"Stream-Closed": "true"})
    assert closed.status_code == 204
    response = await client.post(url, content=b"late", headers={"Content-Type": "text/plain"})
    _check_error(response.status_code, dict(response.headers), response.text, 409)
    assert response.headers["stream-closed"] == "true"
    assert response.headers["stream-next-offset"] == seeded.tail


async def test_put_with_different_config_is_409(seeded: Seeded, client: httpx.AsyncClient) -> None:
    for headers in (
        {"Content-Type": "application/json"},
        {"Content-Type": "text/plain", "Stream-TTL": "60"},
        {"Content-Type": "text/plain", "Stream-Closed": "true"},
    ):
        response = await client.put(seeded.url("text"), headers=headers)
        _check_error(response.status_code, dict(response.headers), response.text, 409)


@pytest.mark.parametrize("method", ["PATCH", "FROB", "PROPFIND", "TRACE"])
async def test_unsupported_method_is_405_with_allow(seeded: Seeded, method: str) -> None:
    for target in (TEXT, f"{ROOT}/nope"):
        response = await raw_request(seeded.base_url, method, target, [TEXT_TYPE], b"x")
        _check_error(response.status, response.headers, response.text, 405)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"}


async def test_unsupported_method_on_healthz_allows_only_get_and_head(server: RunningServer) -> None:
    for method in ("POST", "PATCH", "FROB"):
        response = await raw_request(server.base_url, method, "/healthz", [TEXT_TYPE], b"x")
        _check_error(response.status, response.headers, response.text, 405)
        assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "HEAD"}


@pytest.fixture(name="small_server")
async def _small_server(nursery: trio.Nursery, client: httpx.AsyncClient) -> RunningServer:
    server = await start_server(nursery, max_append_bytes="1KiB")
    await create_stream(client, server.url("s"))
    return server


async def _chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def test_body_over_max_append_bytes_is_413(
    small_server: RunningServer, client: httpx.AsyncClient
) -> None:
    url = small_server.url("s")
    headers = {"Content-Type": "text/plain"}
    attempts = [
        await client.post(url, content=b"x" * 1025, headers=headers),
        await client.post(url, content=_chunks(1025), headers=headers),
        await client.post(url, content=_chunks(64 * 1024, 4096), headers=headers),
        await client.put(small_server.url("big"), content=b"x" * 2048, headers=headers),
    ]
    for response in attempts:
        _check_error(response.status_code, dict(response.headers), response.text, 413)
    assert (await client.head(small_server.url("big"))).status_code == 404
    read = await client.get(url, params={"offset": "-1"})
    assert read.content == b""
    # Exactly the limit is fine, in one piece or chunked.
    assert (await client.post(url, content=b"y" * 1024, headers=headers)).status_code == 204
    assert (await client.post(url, content=_chunks(1024), headers=headers)).status_code == 204
    read = await client.get(url, params={"offset": "-1"})
    assert read.content == b"y" * 1024 + b"x" * 1024


async def test_content_length_over_limit_is_refused_before_the_body(
    small_server: RunningServer,
) -> None:
    # The client announces 10 MiB but sends none of it: the answer comes at once.
    with trio.fail_after(5):
        conn = await RawConnection.open(small_server.base_url)
        try:
            headers = [TEXT_TYPE, ("Content-Length", str(10 * 1024 * 1024))]
            await conn.send("POST", f"{ROOT}/s", headers, complete=False)
            response = await conn.receive_response()
            body = await conn.receive_until(b"\n")
        finally:
            await conn.aclose()
    headers = {k.decode(): v.decode() for k, v in response.headers}
    _check_error(response.status_code, headers, body.decode(), 413)


EARLY_ERRORS = [
    ("400-producer", "POST", [TEXT_TYPE, ("Producer-Id", "p")]),
    ("400-no-content-type", "POST", []),
    ("400-ttl-on-put", "PUT", [TEXT_TYPE, ("Stream-TTL", "x")]),
    ("413-too-large", "POST", [TEXT_TYPE]),
]


@pytest.mark.parametrize(
    ("method", "headers"), [row[1:] for row in EARLY_ERRORS], ids=[row[0] for row in EARLY_ERRORS]
)
async def test_early_error_while_body_in_flight_keeps_connection_usable(
    small_server: RunningServer, method: str, headers: list[tuple[str, str]]
) -> None:
    """The server answers before the body ends; the connection must still work.

    Regression: Hypercorn's end-of-response handling ran while the client was
    still sending, Quart-Trio cancelled it, and the connection hung (never
    reused, never closed), leaking its task and socket until shutdown.
    """
    target = f"{ROOT}/s"
    chunk = b"x" * 600  # two chunks exceed the 1 KiB limit
    with trio.fail_after(5):
        conn = await RawConnection.open(small_server.base_url)
        try:
            head = [*headers, ("Transfer-Encoding", "chunked")]
            await conn.send(method, target, head, chunk, complete=False, keep_alive=True)
            await conn.send_body(chunk)
            response = await conn.receive_response()  # answered mid-body
            body = await conn.receive_body()
            assert 400 <= response.status_code < 500, body
            for _ in range(20):
                await conn.send_body(chunk)
            await conn.end_body()
            conn.next_cycle()
            await conn.send("GET", "/healthz", keep_alive=True)
            assert (await conn.receive_response()).status_code == 200
            assert await conn.receive_body() == b"ok\n"
        finally:
            await conn.aclose()


async def _raw_put(server: RunningServer, path: str, body: bytes) -> int:
    return (await raw_request(server.base_url, "PUT", f"{ROOT}/{path}", [TEXT_TYPE], body)).status


async def _raw_read(server: RunningServer, path: str) -> tuple[int, bytes]:
    response = await raw_request(server.base_url, "GET", f"{ROOT}/{path}?offset=-1")
    return response.status, response.body


async def test_encoded_slash_never_aliases_a_real_slash(server: RunningServer) -> None:
    assert await _raw_put(server, "a%2Fb", b"encoded") == 201
    assert await _raw_put(server, "a/b", b"nested") == 201
    assert await _raw_read(server, "a%2Fb") == (200, b"encoded")
    assert await _raw_read(server, "a%2fb") == (200, b"encoded")  # hex case does not matter
    assert await _raw_read(server, "a/b") == (200, b"nested")
    assert (await _raw_read(server, "a"))[0] == 404
    assert len(server.service.store) == 2
    delete = await raw_request(server.base_url, "DELETE", f"{ROOT}/a%2Fb")
    assert delete.status == 204
    assert await _raw_read(server, "a/b") == (200, b"nested")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("%61bc", "abc"),
        ("%61%62%63", "abc"),
        ("a%7Eb", "a~b"),
        ("a%2db", "a-b"),
        ("x/%79", "x/y"),
        ("caf%C3%A9", "caf%c3%a9"),
        ("a%20b", "a%20b"),
        ("a%3Fb", "a%3fb"),
    ],
)
async def test_percent_encoding_spellings_of_one_name_reach_one_stream(
    server: RunningServer, spelling: str, canonical: str
) -> None:
    assert await _raw_put(server, canonical, b"one") == 201
    assert await _raw_read(server, spelling) == (200, b"one")
    assert await _raw_put(server, spelling, b"") == 200  # the same stream, already there
    append = await raw_request(server.base_url, "POST", f"{ROOT}/{spelling}", [TEXT_TYPE], b"+")
    assert append.status == 204
    assert await _raw_read(server, canonical) == (200, b"one+")
    assert len(server.service.store) == 1


async def test_names_are_case_sensitive(server: RunningServer) -> None:
    assert await _raw_put(server, "Name", b"upper") == 201
    assert await _raw_put(server, "name", b"lower") == 201
    assert await _raw_read(server, "%4Eame") == (200, b"upper")
    assert await _raw_read(server, "name") == (200, b"lower")


@pytest.mark.parametrize("path", ["__ds/x", "__ds", "%5F%5Fds/jwks.json", "__ds/a/b"])
async def test_the_reserved_namespace_never_holds_streams(server: RunningServer, path: str) -> None:
    assert await _raw_put(server, path, b"data") == 404
    status, _ = await _raw_read(server, path)
    assert status == 404
    assert server.service.watchers.statistics().total == 0
    assert await _raw_put(server, "x__ds", b"fine") == 201  # only the whole first segment


@pytest.mark.parametrize(
    ("path", "location_path"),
    [("a%2Fb", "a%2Fb"), ("%61bc", "abc"), ("caf%c3%a9", "caf%C3%A9"), ("a%3Fb", "a%3Fb")],
)
async def test_location_names_the_canonical_stream(
    server: RunningServer, client: httpx.AsyncClient, path: str, location_path: str
) -> None:
    await _raw_put(server, "a/b", b"the other stream")
    created = await raw_request(server.base_url, "PUT", f"{ROOT}/{path}", [TEXT_TYPE], b"mine")
    assert created.status == 201
    location = created.headers["location"]
    assert location == server.url(location_path)
    assert location.isascii()
    # Following Location reaches this stream (httpx sends the path as given).
    response = await client.get(location, params={"offset": "-1"})
    assert response.content == b"mine"
