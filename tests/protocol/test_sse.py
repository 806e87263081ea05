"""Server-Sent Events framing (`ds_trio.protocol.sse`, spec section 5.8).

Frames are checked the way a browser reads them: a small parser written here
from the WHATWG event-stream rules (lines end at CRLF, CR or LF; a blank line
dispatches; `data:` loses one optional leading space; data lines join with
LF). Covers exact bytes for simple frames, text payloads with every kind of
line break, base64 mode for binary streams, and the control event's fields.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.offsets import format_offset
from ds_trio.protocol.sse import control_event, data_event, uses_base64

PROPERTY = settings(max_examples=200, deadline=None, database=None)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    data_lines: tuple[str, ...]


def parse_sse(stream: bytes) -> list[Event]:
    """Dispatched events, as an EventSource would see them.

    Fails if the stream ends inside a line or an event: a frame must be
    complete on its own.
    """
    *lines, rest = LINE_BREAK.split(stream.decode("utf-8"))
    assert rest == "", "stream ends inside a line"
    events: list[Event] = []
    event_type, data_lines = "", []
    for line in lines:
        if line == "":
            if data_lines:  # an empty data buffer dispatches nothing
                data = "\n".join(data_lines)
                events.append(Event(event_type or "message", data, tuple(data_lines)))
            event_type, data_lines = "", []
            continue
        if line.startswith(":"):
            continue  # comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data_lines.append(value)
    assert not data_lines and not event_type, "stream ends inside an event"
    return events


def only_event(frame: bytes) -> Event:
    events = parse_sse(frame)
    assert len(events) == 1, events
    return events[0]


# --- data events ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "frame"),
    [
        pytest.param(b"hello", b"event: data\ndata:hello\n\n", id="one-line"),
        pytest.param(b"", b"event: data\ndata:\n\n", id="empty"),
        pytest.param(b"a\nb", b"event: data\ndata:a\ndata:b\n\n", id="lf"),
        pytest.param(b"a\r\nb", b"event: data\ndata:a\ndata:b\n\n", id="crlf"),
        pytest.param(b"a\rb", b"event: data\ndata:a\ndata:b\n\n", id="cr"),
        pytest.param(b"a\n\nb", b"event: data\ndata:a\ndata:\ndata:b\n\n", id="blank-line"),
        pytest.param(b"x\r\n", b"event: data\ndata:x\ndata:\n\n", id="trailing-break"),
        pytest.param(b"\n", b"event: data\ndata:\ndata:\n\n", id="only-break"),
        pytest.param(b" lead", b"event: data\ndata:  lead\n\n", id="leading-space-kept"),
        pytest.param(b"k: v", b"event: data\ndata:k: v\n\n", id="colon-inside"),
        pytest.param(b"[\n{\"k\":\"v\"}\n]", b'event: data\ndata:[\ndata:{"k":"v"}\ndata:]\n\n',
                     id="json-array-lines"),
    ],
)  # fmt: skip
def test_text_frame(payload: bytes, frame: bytes) -> None:
    assert data_event(payload, base64_encoded=False) == frame


@pytest.mark.parametrize(
    ("payload", "frame"),
    [
        pytest.param(b"", b"event: data\ndata:\n\n", id="empty"),
        pytest.param(b"\x01\x02\x03", b"event: data\ndata:AQID\n\n", id="three-bytes"),
        pytest.param(b"\x01\x02\x03\x04\x05\x06\x07\x08\t\n",
                     b"event: data\ndata:AQIDBAUGBwgJCg==\n\n", id="padded"),
        pytest.param(b"\xfb\xff", b"event: data\ndata:+/8=\n\n", id="standard-alphabet"),
    ],
)  # fmt: skip
def test_base64_frame(payload: bytes, frame: bytes) -> None:
    assert data_event(payload, base64_encoded=True) == frame


def test_text_frame_replaces_invalid_utf8() -> None:
    assert only_event(data_event(b"a\xffb", base64_encoded=False)).data == "a\ufffdb"


tricky_pieces = st.sampled_from(["\r", "\n", "\r\n", " ", ":", "data:", "\n\n"])
line_breaky_text = st.lists(st.one_of(tricky_pieces, st.text(max_size=6)), max_size=20).map("".join)


@PROPERTY
@given(line_breaky_text)
def test_text_payload_survives_an_sse_client(text: str) -> None:
    frame = data_event(text.encode("utf-8"), base64_encoded=False)
    assert b"\r" not in frame
    event = only_event(frame)
    assert event.type == "data"
    assert event.data == LINE_BREAK.sub("\n", text)


@PROPERTY
@given(st.binary(max_size=300))
def test_base64_payload_decodes_back(payload: bytes) -> None:
    event = only_event(data_event(payload, base64_encoded=True))
    assert event.type == "data"
    assert all(len(line) % 4 == 0 for line in event.data_lines)
    text = event.data.replace("\n", "").replace("\r", "")
    assert base64.b64decode(text, validate=True) == payload


@settings(PROPERTY, max_examples=20)
@given(
    unit=st.binary(min_size=1, max_size=64),
    repeat=st.integers(min_value=500, max_value=4000),
)
def test_large_base64_payload_splits_into_whole_quanta(unit: bytes, repeat: int) -> None:
    payload = unit * repeat
    event = only_event(data_event(payload, base64_encoded=True))
    assert all(line and len(line) % 4 == 0 for line in event.data_lines)
    assert base64.b64decode(event.data.replace("\n", ""), validate=True) == payload


def test_very_large_base64_payload_uses_several_lines() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB
    event = only_event(data_event(payload, base64_encoded=True))
    assert len(event.data_lines) > 1
    assert all(len(line) % 4 == 0 for line in event.data_lines)
    assert base64.b64decode(event.data.replace("\n", ""), validate=True) == payload


@pytest.mark.parametrize(
    ("media_type", "encoded"),
    [
        pytest.param("text/plain", False, id="text-plain"),
        pytest.param("text/html", False, id="text-html"),
        pytest.param("application/json", False, id="json"),
        pytest.param("application/octet-stream", True, id="octet-stream"),
        pytest.param("application/ndjson", True, id="ndjson"),
        pytest.param("application/x-protobuf", True, id="protobuf"),
        pytest.param("application/vnd.api+json", True, id="json-suffix"),
        pytest.param("image/png", True, id="image"),
    ],
)
def test_uses_base64(media_type: str, encoded: bool) -> None:
    assert uses_base64(media_type) is encoded


# --- control events --------------------------------------------------------------

OFFSET = format_offset(123)


@pytest.mark.parametrize(
    ("cursor", "up_to_date", "closed", "fields"),
    [
        pytest.param("1000", False, False, {"streamNextOffset": OFFSET, "streamCursor": "1000"},
                     id="open-behind"),
        pytest.param("1000", True, False,
                     {"streamNextOffset": OFFSET, "streamCursor": "1000", "upToDate": True},
                     id="open-up-to-date"),
        pytest.param(None, True, False, {"streamNextOffset": OFFSET, "upToDate": True},
                     id="no-cursor"),
        pytest.param("1000", True, True,
                     {"streamNextOffset": OFFSET, "upToDate": True, "streamClosed": True},
                     id="closed-drops-cursor"),
        pytest.param("1000", False, True,
                     {"streamNextOffset": OFFSET, "upToDate": True, "streamClosed": True},
                     id="closed-implies-up-to-date"),
    ],
)  # fmt: skip
def test_control_event(
    cursor: str | None, up_to_date: bool, closed: bool, fields: dict[str, object]
) -> None:
    frame = control_event(OFFSET, cursor=cursor, up_to_date=up_to_date, closed=closed)
    event = only_event(frame)
    assert event.type == "control"
    assert json.loads(event.data) == fields


def test_control_event_bytes() -> None:
    frame = control_event(OFFSET, cursor="7", up_to_date=False, closed=False)
    assert frame == b'event: control\ndata:{"streamNextOffset":"%s","streamCursor":"7"}\n\n' % (
        OFFSET.encode()
    )


@PROPERTY
@given(
    position=st.integers(min_value=0, max_value=10**16 - 1),
    cursor=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12).map(str)),
    up_to_date=st.booleans(),
    closed=st.booleans(),
)
def test_control_event_fields(
    position: int, cursor: str | None, up_to_date: bool, closed: bool
) -> None:
    offset = format_offset(position)
    frame = control_event(offset, cursor=cursor, up_to_date=up_to_date, closed=closed)
    assert b"false" not in frame
    fields = json.loads(only_event(frame).data)
    assert fields["streamNextOffset"] == offset
    assert ("streamCursor" in fields) is (cursor is not None and not closed)
    if "streamCursor" in fields:
        assert fields["streamCursor"] == cursor
    assert fields.get("upToDate") is (True if up_to_date or closed else None)
    assert fields.get("streamClosed") is (True if closed else None)
