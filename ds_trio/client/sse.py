"""Decoding a Server-Sent Events response incrementally (spec 5.8), without I/O.

Strategy: bytes go in as they arrive, in chunks cut anywhere; complete events
come out. Lines end at CRLF, LF or CR (a CR at the very end of a chunk waits
for the next one, which may bring its LF). A blank line dispatches the event
gathered so far; `data:` lines join with LF; comments and unknown fields are
ignored, as the SSE specification says.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

from .model import Unavailable

__all__ = ["SseDecoder", "SseEvent", "event_payload"]

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its type (`message` when unnamed) and its data."""

    event: str
    data: str


class SseDecoder:
    """Turns an SSE byte stream into `SseEvent`s; feed it every chunk in order."""

    def __init__(self) -> None:
        self._pending = b""  # an unfinished line
        self._event = ""
        self._data: list[str] | None = None  # None: no data line yet, nothing to dispatch

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by `chunk`."""
        buffer = self._pending + chunk
        events: list[SseEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == b"\r" and match.end() == len(buffer):
                break  # maybe half of a CRLF split across chunks
            event = self._line(buffer[start : match.start()].decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = buffer[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            event, data = self._event, self._data
            self._event, self._data = "", None
            return None if data is None else SseEvent(event or "message", "\n".join(data))
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            if self._data is None:
                self._data = []
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def event_payload(event: SseEvent, *, base64_encoded: bool) -> bytes:
    """The bytes a `data` event carries: base64-decoded for binary streams.

    Raises:
        Unavailable: the base64 text is not valid.
    """
    if not base64_encoded:
        return event.data.encode("utf-8")
    text = event.data.replace("\n", "").replace("\r", "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Unavailable("the server sent an SSE data event that is not valid base64") from None
