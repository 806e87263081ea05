"""WebSocket messages for live=ws reads (`ds_trio.protocol.ws`).

The rule under test: a client tells data from control by the frame alone,
whatever the stream holds, and text reassembled from batches is the text stored.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_trio.protocol.ws import (
    Framing,
    control_message,
    data_message,
    framing_for,
    whole_characters,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)


def kind(message: str | bytes) -> str:
    """What a client following the documented rule makes of a frame."""
    if isinstance(message, bytes):
        return "data"
    value = json.loads(message)
    if isinstance(value, list):
        return "data"
    return str(value["type"])


@pytest.mark.parametrize(
    ("media_type", "framing"),
    [
        ("text/plain", Framing.TEXT),
        ("text/csv", Framing.TEXT),
        ("application/json", Framing.JSON),
        ("application/octet-stream", Framing.BINARY),
        ("application/ndjson", Framing.BINARY),
        ("image/png", Framing.BINARY),
    ],
)
def test_framing_follows_what_sse_base64_encodes(media_type: str, framing: Framing) -> None:
    assert framing_for(media_type) is framing


def test_each_framing_carries_its_payload() -> None:
    assert data_message(b"\x00\xff\x80", Framing.BINARY) == b"\x00\xff\x80"
    assert data_message(b'[{"k":"v"},1]', Framing.JSON) == '[{"k":"v"},1]'
    text = data_message("héllo\n".encode(), Framing.TEXT)
    assert isinstance(text, str)
    assert json.loads(text) == {"type": "data", "data": "héllo\n"}


@given(st.text())
@PROPERTY
def test_text_that_reads_as_control_is_still_data(text: str) -> None:
    for payload in (text, json.dumps({"type": "control", "streamNextOffset": text})):
        message = data_message(payload.encode(), Framing.TEXT)
        assert kind(message) == "data"


def test_control_messages_carry_the_sse_fields() -> None:
    open_ = json.loads(control_message("0_5", cursor="77", up_to_date=False, closed=False))
    assert open_ == {"type": "control", "streamNextOffset": "0_5", "streamCursor": "77"}
    caught_up = json.loads(control_message("0_5", cursor="77", up_to_date=True, closed=False))
    assert caught_up["upToDate"] is True
    closed = json.loads(control_message("0_9", cursor="77", up_to_date=True, closed=True))
    assert closed == {
        "type": "control",
        "streamNextOffset": "0_9",
        "upToDate": True,
        "streamClosed": True,
    }
    assert kind(json.dumps(closed)) == "control"


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"", 0),
        (b"abc", 3),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        ("a€".encode()[:2], 1),
        ("a€".encode()[:3], 1),
        ("a€".encode(), 4),
        ("x😀".encode()[:4], 1),
        ("x😀".encode(), 5),
        (b"\x80\x80\x80\x80\x80", 5),  # not UTF-8: nothing held back
        (b"a\xff", 2),
        (b"a\xc3\xa9\xa9", 4),  # a stray continuation byte after a whole character
    ],
)
def test_whole_characters(data: bytes, whole: int) -> None:
    assert whole_characters(data) == whole


@given(st.text(min_size=1), st.integers(min_value=1, max_value=64))
@PROPERTY
def test_cutting_batches_at_whole_characters_keeps_the_text(text: str, size: int) -> None:
    stored = text.encode()
    received, position = "", 0
    while position < len(stored):
        batch = stored[position : position + size]
        whole = whole_characters(batch)
        if 0 < whole < len(batch) and position + len(batch) < len(stored):
            batch = batch[:whole]
        message = data_message(batch, Framing.TEXT)
        received += json.loads(message)["data"]
        position += len(batch)
    if size >= 4:  # room for any character: none is ever split
        assert received == text
