"""One fuzz operation on the wire: the request, its answer, sending it over httpx or raw bytes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import trio

OP_TIMEOUT: Final = 15.0  # seconds; httpx gives up after 10, this bounds the rest
RAW_PATIENCE: Final = 1.0  # seconds before a raw request's sender closes its side
_STATUS_LINE: Final = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3})")

Header = tuple[str, str | bytes]


@dataclass
class Call:
    """One request the campaign sends, and what judging its answer needs."""

    kind: str  # put, fork, post, get, long-poll, sse, head, delete, or a generic kind
    method: str
    target: str  # path and query, exactly as sent
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""
    chunked: list[bytes] | None = None  # send the body in these chunks
    raw: bytes | None = None  # send these bytes on a fresh connection instead
    context: dict[str, Any] = field(default_factory=dict)  # what the judge needs to know
    comparable: bool = True  # the same seed gives the same status on every store
    may_drop: bool = False  # the server may close the connection instead of answering
    label: str = ""  # a store-independent description, for comparing runs

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{self.kind} {self.method} {self.target[:200]}"

    def describe(self) -> str:
        """Enough to replay the request by hand."""
        if self.raw is not None:
            return f"raw bytes {self.raw[:300]!r}{' ...' if len(self.raw) > 300 else ''}"
        body = b"".join(self.chunked) if self.chunked is not None else self.body
        headers = [(k, v if isinstance(v, str) else repr(v)) for k, v in self.headers]
        shown = [(k, v[:120] + ("..." if len(v) > 120 else "")) for k, v in headers]
        framing = f"chunked {len(self.chunked)} pieces" if self.chunked is not None else "length"
        return (
            f"{self.method} {self.target[:300]}\n  headers {shown}\n"
            f"  body ({len(body)} bytes, {framing}) {body[:200]!r}"
        )


@dataclass
class Answer:
    """A response: status None when the connection closed without one."""

    status: int | None
    headers: httpx.Headers
    body: bytes
    statuses: tuple[int, ...] = ()  # every status line seen (raw exchanges)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def flag(self, name: str) -> bool:
        return (self.headers.get(name) or "").lower() == "true"

    def describe(self) -> str:
        if self.status is None:
            return "no response (connection closed)"
        interesting = {
            k: v
            for k, v in self.headers.items()
            if k.startswith(("stream-", "producer-", "content-type", "location", "etag"))
        }
        return f"{self.status} {interesting} body {self.body[:200]!r}"


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _header_value(value: str | bytes) -> str | bytes:
    """What h11 will send: surrounding whitespace is not part of a field value anyway."""
    value = value.strip()
    return value.encode() if isinstance(value, str) and not value.isascii() else value


async def send_httpx(client: httpx.AsyncClient, base_url: str, call: Call) -> Answer:
    content: bytes | AsyncIterator[bytes] = (
        _chunks(call.chunked) if call.chunked is not None else call.body
    )
    headers = [(name, _header_value(value)) for name, value in call.headers]
    request = client.build_request(
        call.method, base_url + call.target, headers=headers, content=content
    )
    response = await client.send(request, stream=True)
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    return Answer(response.status_code, response.headers, body)


def _answered(data: bytes, requests: int) -> bool:
    """Whether `data` is a whole number of responses, `requests` of them final (not 1xx)."""
    position, finals = 0, 0
    while position < len(data):
        end = data.find(b"\r\n\r\n", position)
        if end < 0 or not data.startswith(b"HTTP/1.", position):
            return False
        head = data[position:end].decode("latin-1").lower()
        if "transfer-encoding" in head:
            return False  # a chunked answer: read it to the end of the connection
        length = re.search(r"\r\ncontent-length: *(\d+)", head)
        position = end + 4 + (int(length.group(1)) if length else 0)
        finals += head[9:10] != "1"
    return finals >= requests and position == len(data)


async def send_raw(host: str, port: int, data: bytes) -> Answer:
    """Write `data`; read until every request in it is answered or the server closes.

    For a request the server is still waiting on (a short body, say), the
    write side is closed after `RAW_PATIENCE`; the server must then answer or
    close. (Not sooner: Hypercorn takes the end of the input as the client
    leaving and cancels a request in progress.)
    """
    received = bytearray()
    requests = max(1, data.count(b" HTTP/1."))
    stream = await trio.open_tcp_stream(host, port)

    async def receive(timeout: float) -> bool:
        """Read until all is answered or the server closes (True), or `timeout` passes."""
        with trio.move_on_after(timeout):
            while chunk := await stream.receive_some(65536):
                received.extend(chunk)
                if _answered(bytes(received), requests):
                    return True
            return True
        return False

    try:
        try:
            await stream.send_all(data)
            if not await receive(RAW_PATIENCE):
                await stream.send_eof()
                await receive(OP_TIMEOUT)
        except trio.BrokenResourceError:
            pass  # reset by the server, after its answer if any
    finally:
        await stream.aclose()
    statuses = tuple(int(m.group(1)) for m in _STATUS_LINE.finditer(bytes(received)))
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    headers = httpx.Headers()
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.decode("latin-1").strip()] = value.decode("latin-1").strip()
    final = next((s for s in reversed(statuses) if s >= 200), statuses[-1] if statuses else None)
    return Answer(final, headers, body, statuses)
