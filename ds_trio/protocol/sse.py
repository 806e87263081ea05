"""Server-Sent Events framing for live reads (spec 5.8).

Rule: a payload never reaches the wire with a bare CR or LF inside a `data:`
line. Text is split on every line break (`\r\n`, `\r` or `\n`) into one
`data:` line per line; binary payloads are base64-encoded first.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Final

__all__ = ["control_event", "control_fields", "data_event", "uses_base64"]

_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_BASE64_LINE: Final = 76 * 1024  # characters per data: line for base64 text (a multiple of 4)


def uses_base64(media_type: str) -> bool:
    """Whether SSE data for this media type must be base64-encoded."""
    return not (media_type.startswith("text/") or media_type == "application/json")


def _data_line(line: str) -> str:
    # Readers drop one space after "data:", so only a line that itself starts
    # with a space needs the separator space to survive intact.
    return f"data: {line}\n" if line.startswith(" ") else f"data:{line}\n"


def _frame(event: str, lines: list[str]) -> bytes:
    body = "".join(_data_line(line) for line in lines)
    return f"event: {event}\n{body}\n".encode()


def data_event(payload: bytes, *, base64_encoded: bool) -> bytes:
    """One `event: data` frame carrying `payload`."""
    if base64_encoded:
        text = base64.b64encode(payload).decode("ascii")
        lines = [text[i : i + _BASE64_LINE] for i in range(0, len(text), _BASE64_LINE)] or [""]
    else:
        lines = _LINE_BREAK.split(payload.decode("utf-8", errors="replace"))
    return _frame("data", lines)


def control_fields(
    next_offset: str, *, cursor: str | None, up_to_date: bool, closed: bool
) -> dict[str, object]:
    """A control message's fields: the reader's position and state (also sent over WebSockets)."""
    fields: dict[str, object] = {"streamNextOffset": next_offset}
    if cursor is not None and not closed:
        fields["streamCursor"] = cursor
    if up_to_date or closed:
        fields["upToDate"] = True
    if closed:
        fields["streamClosed"] = True
    return fields


def control_event(
    next_offset: str, *, cursor: str | None, up_to_date: bool, closed: bool
) -> bytes:
    """One `event: control` frame with the reader's position and state."""
    fields = control_fields(next_offset, cursor=cursor, up_to_date=up_to_date, closed=closed)
    return _frame("control", [json.dumps(fields, separators=(",", ":"))])
