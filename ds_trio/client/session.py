"""The command-line client's I/O: requests over httpx, data to stdout.

Rule: every request goes through `Session`, which turns each non-2xx answer
and each transport failure into a `ClientError` from `model`, so the commands
here only sequence requests and write what comes back to the `Console`.
A live read writes a batch and records its next offset with no checkpoint in
between, so an interruption always leaves an offset that resumes exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

import httpx
import trio

from .console import Console
from .model import (
    Exit,
    Producer,
    Stalled,
    Unavailable,
    UsageError,
    append_headers,
    control_position,
    describe_stream,
    failure_for,
    is_json,
    json_lines,
    position_from,
)
from .sse import SseDecoder, event_payload
from .upload import Upload, opened

__all__ = [
    "Session",
    "TailState",
    "append",
    "close",
    "create",
    "delete",
    "head",
    "read",
    "tail",
]

TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)  # seconds, for every ordinary request
# Past any server's long-poll timeout or SSE interval (30 s and 60 s by default):
# a live read that hears nothing for this long asks again instead of hanging.
LIVE_TIMEOUT: Final = httpx.Timeout(300.0, connect=10.0)  # seconds
CLOSE_GRACE: Final = 5.0  # seconds an SSE response may take to end after its final event

TailMode = Literal["long-poll", "sse"]


class Session:
    """One HTTP client for a command, carrying the bearer token if there is one."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    @asynccontextmanager
    async def open(cls, token: str | None) -> AsyncIterator[Session]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT) as client:
            yield cls(client)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> httpx.Response:
        """The 2xx answer to one request.

        Raises:
            Refused: a 4xx answer. Unavailable: no answer, or a 5xx.
        """
        with _translated(url):
            response = await self._client.request(
                method, url, headers=headers, params=params, content=content, timeout=timeout
            )
        _check(response)
        return response

    @asynccontextmanager
    async def stream(
        self, url: str, params: Mapping[str, str], timeout: httpx.Timeout
    ) -> AsyncIterator[httpx.Response]:
        """A GET whose 2xx body is read as it arrives (SSE); errors as for `send`."""
        with _translated(url):
            async with self._client.stream("GET", url, params=params, timeout=timeout) as response:
                if not response.is_success:
                    await response.aread()
                    _check(response)
                yield response


def _check(response: httpx.Response) -> None:
    if not response.is_success:
        raise failure_for(response.status_code, response.content, response.headers)


@contextmanager
def _translated(url: str) -> Iterator[None]:
    """httpx's failures as the client's errors, naming the server, not the stack."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    try:
        yield
    except httpx.ReadTimeout:
        raise Stalled(f"no answer from {origin} in time") from None
    except httpx.TimeoutException:
        raise Unavailable(f"timed out talking to {origin}") from None
    except httpx.ConnectError as exc:
        raise Unavailable(f"cannot connect to {origin}: {_reason(exc)}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise UsageError(f"bad URL {url!r}: {exc}") from None
    except httpx.TransportError as exc:
        raise Unavailable(f"the connection to {origin} failed: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _emit_offset(console: Console, response: httpx.Response) -> None:
    if offset := response.headers.get("stream-next-offset"):
        console.emit(f"{offset}\n".encode())


async def create(
    session: Session, console: Console, url: str, headers: dict[str, str], upload: Upload | None
) -> Exit:
    """PUT: create the stream (spec 5.1); prints its next offset."""
    async with opened(upload, console) as body:
        response = await session.send(
            "PUT", url, headers={**headers, **body.headers}, content=body.content
        )
    if response.status_code == 200:
        console.say("the stream already exists with this configuration")
    _emit_offset(console, response)
    return Exit.OK


async def append(
    session: Session,
    console: Console,
    url: str,
    *,
    content_type: str | None,
    close: bool,
    producer: Producer | None,
    upload: Upload | None,
) -> Exit:
    """POST: append `upload` (or only close); prints the next offset (spec 5.2, 5.2.1).

    Without `content_type` a HEAD learns the stream's own, which the server requires.
    """
    async with opened(upload, console) as body:
        if upload is not None and content_type is None:
            found = await session.send("HEAD", url)
            content_type = found.headers.get("content-type", "application/octet-stream")
        headers = append_headers(
            content_type if upload is not None else None, close=close, producer=producer
        )
        response = await session.send(
            "POST", url, headers={**headers, **body.headers}, content=body.content
        )
    if producer is not None and upload is not None and response.status_code == 204:
        console.say(
            f"duplicate: producer {producer.id} epoch {producer.epoch} seq {producer.seq} "
            "was already appended; nothing new was written"
        )
    _emit_offset(console, response)
    return Exit.OK


async def close(session: Session, console: Console, url: str) -> Exit:
    """POST with Stream-Closed and no body (spec 5.3); prints the final offset."""
    response = await session.send("POST", url, headers={"Stream-Closed": "true"})
    _emit_offset(console, response)
    return Exit.OK


async def delete(session: Session, console: Console, url: str) -> Exit:
    """DELETE (spec 5.4)."""
    await session.send("DELETE", url)
    return Exit.OK


async def head(session: Session, console: Console, url: str) -> Exit:
    """HEAD: the stream's metadata as `key: value` lines (spec 5.5)."""
    response = await session.send("HEAD", url)
    console.emit(describe_stream(response.headers).encode())
    return Exit.OK


async def read(session: Session, console: Console, url: str, *, offset: str, as_json: bool) -> Exit:
    """Catch-up: follow Stream-Next-Offset until Stream-Up-To-Date (spec 5.6)."""
    while True:
        response = await session.send("GET", url, params={"offset": offset})
        content_type = response.headers.get("content-type")
        if as_json and not is_json(content_type):
            raise UsageError(f"--json needs an application/json stream; this one is {content_type}")
        console.emit(json_lines(response.content) if as_json else response.content)
        position = position_from(response.headers, offset)
        if position.up_to_date:
            return Exit.OK
        if position.offset == offset:
            raise Unavailable(f"the server's read did not move past offset {offset}")
        offset = position.offset


@dataclass
class TailState:
    """How far a live read has got: the offset to resume from, after all it printed."""

    offset: str
    cursor: str | None = None


async def tail(
    session: Session,
    console: Console,
    url: str,
    state: TailState,
    *,
    mode: TailMode,
    as_json: bool,
) -> Exit:
    """Live: print data as it arrives until the stream closes (spec 5.7, 5.8).

    Each long-poll, and each SSE connection the server ends, is followed by
    another from `state.offset`; a connection that goes silent is replaced.
    `now` is resolved to the tail offset with a HEAD first.
    """
    if as_json or state.offset == "now":
        found = await session.send("HEAD", url)
        content_type = found.headers.get("content-type")
        if as_json and not is_json(content_type):
            raise UsageError(f"--json needs an application/json stream; this one is {content_type}")
        if state.offset == "now":  # a real offset from the start: an interruption then says
            state.offset = found.headers.get("stream-next-offset", "now")  # exactly where it was
    follow = _poll_once if mode == "long-poll" else _sse_once
    while True:
        try:
            if await follow(session, console, url, state, as_json):
                return Exit.OK
        except Stalled:
            continue


async def _poll_once(
    session: Session, console: Console, url: str, state: TailState, as_json: bool
) -> bool:
    """One long-poll; True once the stream is closed and everything was printed."""
    params = {"offset": state.offset, "live": "long-poll"}
    if state.cursor is not None:
        params["cursor"] = state.cursor
    response = await session.send("GET", url, params=params, timeout=LIVE_TIMEOUT)
    data = response.content if response.status_code == 200 else b""
    console.emit(json_lines(data) if as_json and data else data)
    position = position_from(response.headers, state.offset)
    state.offset, state.cursor = position.offset, position.cursor or state.cursor
    return position.closed


async def _sse_once(
    session: Session, console: Console, url: str, state: TailState, as_json: bool
) -> bool:
    """One SSE connection; True once the stream is closed and everything was printed.

    Data events are held until the control event that gives their next offset,
    so what is printed and the offset recorded never disagree. After the final
    control event the server ends the response; reading on to that end (for
    `CLOSE_GRACE` at most) leaves no half-read response behind.
    """
    params = {"offset": state.offset, "live": "sse"}
    closed = False
    async with session.stream(url, params, LIVE_TIMEOUT) as response:
        encoding = response.headers.get("stream-sse-data-encoding", "").lower()
        decoder = SseDecoder()
        held: list[bytes] = []
        with trio.CancelScope() as draining:
            async for chunk in response.aiter_bytes():
                if closed:
                    continue
                for event in decoder.feed(chunk):
                    if event.event == "data":
                        payload = event_payload(event, base64_encoded=encoding == "base64")
                        held.append(json_lines(payload) if as_json and payload else payload)
                    elif event.event == "control":
                        position = control_position(event.data, state.offset)
                        console.emit(b"".join(held))
                        held.clear()
                        state.offset = position.offset
                        if position.closed:
                            closed = True
                            draining.deadline = trio.current_time() + CLOSE_GRACE
                            break
    return closed
