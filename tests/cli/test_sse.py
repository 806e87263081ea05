"""SSE decoding: events survive being cut anywhere, in every line-ending style."""

from __future__ import annotations

import base64

import pytest

from ds_trio.client.model import Unavailable
from ds_trio.client.sse import SseDecoder, SseEvent, event_payload

STREAM = (
    b": a comment\n"
    b'event: data\ndata:[\ndata: {"k":"v"}\ndata:]\n\n'
    b'event: control\r\ndata: {"streamNextOffset":"1"}\r\n\r\n'
    b"event: data\rdata:  two spaces\rid: ignored\r\r"
    b"event: data\ndata:\n\n"  # an empty payload is still an event
    b"event: control\n\n"  # no data line: nothing to dispatch
    b"data: unnamed\n\n"
)
EVENTS = [
    SseEvent("data", '[\n{"k":"v"}\n]'),
    SseEvent("control", '{"streamNextOffset":"1"}'),
    SseEvent("data", " two spaces"),
    SseEvent("data", ""),
    SseEvent("message", "unnamed"),
]


def test_whole_stream() -> None:
    assert SseDecoder().feed(STREAM) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_cut_into_chunks(size: int) -> None:
    decoder = SseDecoder()
    events = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert events == EVENTS


def test_a_cr_at_a_chunk_end_may_be_half_a_crlf() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r\n") == [SseEvent("message", "x")]


def test_payloads() -> None:
    raw = bytes(range(256))
    text = base64.b64encode(raw).decode()
    split = SseEvent("data", text[:100] + "\r\n" + text[100:])
    assert event_payload(split, base64_encoded=True) == raw
    assert event_payload(SseEvent("data", "h\u00e9"), base64_encoded=False) == "h\u00e9".encode()
    assert event_payload(SseEvent("data", ""), base64_encoded=True) == b""
    with pytest.raises(Unavailable):
        event_payload(SseEvent("data", "abc"), base64_encoded=True)
