"""WebSocket messages for live reads (`live=ws`, a protocol extension: spec 11.1).

Rule: every frame says by itself what it is, whatever the stream holds.

- A control message is a text frame holding one JSON object, `{"type":"control",...}`,
  with the fields of an SSE control event (`streamNextOffset`, `streamCursor`,
  `upToDate`, `streamClosed`; see `sse.control_fields`).
- Data of a binary stream (one SSE would base64-encode) is a binary frame: the exact bytes.
- Data of a JSON stream is a text frame holding the batch as one JSON array, the
  same text as a catch-up read's body and an SSE data event.
- Data of a text stream is a text frame holding `{"type":"data","data":"<text>"}`:
  the text itself could read as a control message, so it is wrapped.

So a binary frame is always data, and a text frame is always JSON: an array is
data, an object names its kind in `type`. Bytes of a text or JSON stream that
are not UTF-8 arrive as U+FFFD, as in SSE.
"""

from __future__ import annotations

import enum
import json
from typing import Final

from .json_mode import JSON_MEDIA_TYPE
from .sse import control_fields, uses_base64

__all__ = ["Framing", "control_message", "data_message", "framing_for", "whole_characters"]

_COMPACT: Final = (",", ":")


class Framing(enum.Enum):
    """How a stream's data travels over a WebSocket."""

    BINARY = "binary"  # binary frames, the bytes as stored
    JSON = "json"  # text frames, one JSON array per batch
    TEXT = "text"  # text frames, {"type":"data","data":...}


def framing_for(media_type: str) -> Framing:
    """The framing of a stream with this (lower-cased) media type."""
    if uses_base64(media_type):
        return Framing.BINARY
    return Framing.JSON if media_type == JSON_MEDIA_TYPE else Framing.TEXT


def data_message(payload: bytes, framing: Framing) -> str | bytes:
    """The message carrying one batch: `payload` is its catch-up body (a JSON array for JSON)."""
    if framing is Framing.BINARY:
        return payload
    text = payload.decode("utf-8", errors="replace")
    if framing is Framing.JSON:
        return text
    return json.dumps({"type": "data", "data": text}, ensure_ascii=False, separators=_COMPACT)


def control_message(
    next_offset: str, *, cursor: str | None, up_to_date: bool, closed: bool
) -> str:
    """The control message that follows each batch (and opens a read at the tail)."""
    fields = control_fields(next_offset, cursor=cursor, up_to_date=up_to_date, closed=closed)
    return json.dumps({"type": "control", **fields}, separators=_COMPACT)


def _sequence_length(lead: int) -> int:
    """The length of the UTF-8 sequence a byte starts (1 for one that starts none)."""
    if lead >= 0xF8 or lead < 0xC0:
        return 1
    return 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2


def whole_characters(data: bytes) -> int:
    """How many bytes of `data` end on a character boundary: all, or all but a cut-off last one.

    A read that stops at `max_read_bytes` can end inside a multi-byte UTF-8
    character; sending the rest of it with the next batch keeps the character
    whole. Bytes that are not UTF-8 at all are not held back.
    """
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last sequence starts here
            return end - back if _sequence_length(byte) > back else end
    return end
