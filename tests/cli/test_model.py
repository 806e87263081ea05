"""The client's pure decisions, as tables: URLs, errors, headers, output formats."""

from __future__ import annotations

import pytest

from ds_trio.client.model import (
    Exit,
    Position,
    Producer,
    Refused,
    Unavailable,
    UsageError,
    append_headers,
    control_position,
    create_headers,
    describe_stream,
    failure_for,
    json_lines,
    position_from,
    stream_url,
)

ROOT = "http://127.0.0.1:4437/v1/stream"
TEXT = {"content-type": "text/plain; charset=utf-8"}


@pytest.mark.parametrize(
    ("target", "server", "expected"),
    [
        ("chat", ROOT, f"{ROOT}/chat"),
        ("/a/b/", ROOT + "/", f"{ROOT}/a/b"),
        ("a b?#", ROOT, f"{ROOT}/a%20b%3F%23"),  # would otherwise start a query or fragment
        ("a%2Fb", ROOT, f"{ROOT}/a%2Fb"),  # already encoded: kept as typed
        ("https://h.example/v1/stream/x", ROOT, "https://h.example/v1/stream/x"),
    ],
)
def test_stream_url(target: str, server: str, expected: str) -> None:
    assert stream_url(target, server) == expected


@pytest.mark.parametrize(
    ("target", "server"),
    [
        ("/", ROOT),
        ("chat", "127.0.0.1:4437"),
        ("chat", "ftp://h/x"),
        ("ftp://h/x", ROOT),
        ("http:///x", ROOT),
    ],
)
def test_stream_url_refuses(target: str, server: str) -> None:
    with pytest.raises(UsageError):
        stream_url(target, server)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "message"),
    [
        (404, b"stream not found\n", TEXT, Refused, "404 stream not found"),
        (404, b"", {}, Refused, "404 stream not found"),  # HEAD: no body
        (409, b"stream is closed\n", TEXT, Refused, "409 stream is closed"),
        (
            401,
            b"",
            {"www-authenticate": 'Bearer realm="x", error_description="unknown token"'},
            Refused,
            "401 unknown token",
        ),
        (418, b"<html>teapot</html>", {"content-type": "text/html"}, Refused, "418 i'm a teapot"),
        (413, b"x" * 500, TEXT, Refused, "413 " + "x" * 200),
        (503, b"shutting down\nmore", TEXT, Unavailable, "503 shutting down"),
        (502, b"", {}, Unavailable, "502 bad gateway"),
        (599, b"", {}, Unavailable, "599 unexpected status"),
    ],
)
def test_failure_for(
    status: int, body: bytes, headers: dict[str, str], kind: type, message: str
) -> None:
    error = failure_for(status, body, headers)
    assert type(error) is kind
    assert error.message == message
    assert error.code == (Exit.REFUSED if kind is Refused else Exit.UNAVAILABLE)


def test_create_headers() -> None:
    assert create_headers("text/plain", ttl="60", expires_at=None, closed=True) == {
        "Content-Type": "text/plain",
        "Stream-TTL": "60",
        "Stream-Closed": "true",
    }
    at = create_headers("a/b", ttl=None, expires_at=" 2030-01-01T00:00:00Z ", closed=False)
    assert at == {"Content-Type": "a/b", "Stream-Expires-At": "2030-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("ttl", "expires_at"),
    [
        ("1.5", None),
        ("+60", None),
        ("060", None),
        (None, "tomorrow"),
        ("1", "2030-01-01T00:00:00Z"),
    ],
)
def test_create_headers_refuses_what_the_server_would(
    ttl: str | None, expires_at: str | None
) -> None:
    with pytest.raises(UsageError):
        create_headers("text/plain", ttl=ttl, expires_at=expires_at, closed=False)


def test_append_headers() -> None:
    producer = Producer("p", 1, 2)
    assert append_headers("text/plain", close=True, producer=producer) == {
        "Content-Type": "text/plain",
        "Stream-Closed": "true",
        "Producer-Id": "p",
        "Producer-Epoch": "1",
        "Producer-Seq": "2",
    }
    assert append_headers(None, close=True, producer=None) == {"Stream-Closed": "true"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((None, None, None), None),
        (("p", 0, 0), Producer("p", 0, 0)),
        (("p", 0, None), UsageError),
        ((None, 0, 0), UsageError),
        (("", 0, 0), UsageError),
        (("p", -1, 0), UsageError),
        (("p", 0, 2**53), UsageError),
    ],
)
def test_producer_options(
    options: tuple[str | None, int | None, int | None], expected: object
) -> None:
    if expected is UsageError:
        with pytest.raises(UsageError):
            Producer.from_options(*options)
    else:
        assert Producer.from_options(*options) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Position("old")),
        ({"stream-next-offset": "n", "stream-cursor": "c"}, Position("n", "c")),
        ({"stream-next-offset": "n", "stream-up-to-date": "true"}, Position("n", up_to_date=True)),
        ({"stream-next-offset": "n", "stream-closed": "TRUE"}, Position("n", None, True, True)),
        ({"stream-next-offset": "n", "stream-closed": "yes"}, Position("n")),  # only `true` counts
    ],
)
def test_position_from(headers: dict[str, str], expected: Position) -> None:
    assert position_from(headers, "old") == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"streamNextOffset":"n","streamCursor":"c"}', Position("n", "c")),
        ('{"streamNextOffset":"n","upToDate":true}', Position("n", up_to_date=True)),
        ('{"streamNextOffset":"n","streamClosed":true}', Position("n", None, True, True)),
        ("[]", Unavailable),
        ("not json", Unavailable),
        ('{"streamNextOffset":7}', Unavailable),
    ],
)
def test_control_position(data: str, expected: object) -> None:
    if expected is Unavailable:
        with pytest.raises(Unavailable):
            control_position(data, "old")
    else:
        assert control_position(data, "old") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", b""),
        (b'[{"a": 1}, [1,2] ,"x"]', b'{"a": 1}\n[1,2]\n"x"\n'),
        (
            b'[{"a":\r\n  1,\n "b": "l\\nine"}]',
            b'{"a":  1, "b": "l\\nine"}\n',
        ),  # one line, meaning kept
        (b'{"a": 1}', Unavailable),
        (b"[1,", Unavailable),
    ],
)
def test_json_lines(body: bytes, expected: object) -> None:
    if expected is Unavailable:
        with pytest.raises(Unavailable):
            json_lines(body)
    else:
        assert json_lines(body) == expected


def test_describe_stream() -> None:
    assert (
        describe_stream(
            {"content-type": "text/plain", "stream-next-offset": "o", "stream-ttl": "60"}
        )
        == "content-type: text/plain\nnext-offset: o\nclosed: false\nttl: 60\n"
    )
    assert (
        describe_stream(
            {
                "content-type": "a/b",
                "stream-next-offset": "o",
                "stream-closed": "true",
                "stream-expires-at": "2030-01-01T00:00:00Z",
            }
        )
        == "content-type: a/b\nnext-offset: o\nclosed: true\nexpires-at: 2030-01-01T00:00:00Z\n"
    )
