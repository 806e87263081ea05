"""Helpers for the HTTP tests: raw requests, SSE parsing, bounded waits.

Rule: the only polling allowed is on server-side state the test cannot be
woken by (watcher counts, store size), and every such loop is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

import h11
import httpx
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..conftest import RunningServer

# (method, url, status) of every response a test received; checked per test.
SEEN_RESPONSES: list[tuple[str, str, int]] = []

POLL_INTERVAL: Final = 0.01  # seconds, only for waiting on server-side counts
SECURITY_HEADERS: Final = {
    "x-content-type-options": "nosniff",
    "cross-origin-resource-policy": "cross-origin",
    "access-control-allow-origin": "*",
}


async def _record(response: httpx.Response) -> None:
    SEEN_RESPONSES.append(
        (response.request.method, str(response.request.url), response.status_code)
    )


def recording_client(max_connections: int = 100, timeout: float = 10.0) -> httpx.AsyncClient:
    """An httpx client whose every response is checked for 500s after the test.

    httpcore's pool scans all its connections on every request, so a test
    with a thousand concurrent requests spreads them over several clients.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=timeout, limits=limits, event_hooks={"response": [_record]})


@dataclass(frozen=True)
class RawResponse:
    """A response read off the wire by `raw_request`."""

    status: int
    headers: dict[str, str]  # lower-cased names; the last value wins
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class RawConnection:
    """One HTTP/1.1 connection driven by h11, with exact request targets.

    httpx normalises dot segments away and keeps async generators alive when
    a streamed body is abandoned; this puts the very bytes under test on the
    wire and lets a test drop the connection mid-response like a real client.
    """

    def __init__(self, base_url: str, stream: trio.SocketStream) -> None:
        self.base_url = base_url
        self._stream = stream
        self._conn = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None

    @classmethod
    async def open(cls, base_url: str) -> RawConnection:
        parts = urlsplit(base_url)
        assert parts.hostname is not None
        assert parts.port is not None
        return cls(base_url, await trio.open_tcp_stream(parts.hostname, parts.port))

    async def aclose(self) -> None:
        """Drop the connection, whatever state the response is in."""
        await self._stream.aclose()

    async def send(
        self,
        method: str,
        target: str | bytes,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        complete: bool = True,
        keep_alive: bool = False,
    ) -> None:
        """Send a request; with `complete` False, the body is left unfinished."""
        parts = urlsplit(self.base_url)
        keep = keep_alive or any(name.lower() == "connection" for name, _ in headers or [])
        all_headers = [("Host", parts.netloc), *([] if keep else [("Connection", "close")])]
        all_headers += headers or []
        framing = ("content-length", "transfer-encoding")
        has_length = any(name.lower() in framing for name, _ in all_headers)
        if not has_length and (body or method in ("POST", "PUT")):
            all_headers.append(("Content-Length", str(len(body))))
        raw_target = target.encode("ascii") if isinstance(target, str) else target
        self._target = raw_target.decode("latin-1")
        self._method = method
        out = self._conn.send(h11.Request(method=method, target=raw_target, headers=all_headers))
        if body:
            out += self._conn.send(h11.Data(data=body))
        if complete:
            out += self._conn.send(h11.EndOfMessage())
        await self._stream.send_all(out)

    async def send_body(self, data: bytes) -> None:
        """More of an unfinished request body."""
        await self._stream.send_all(self._conn.send(h11.Data(data=data)))

    async def end_body(self) -> None:
        """Finish an unfinished request body."""
        await self._stream.send_all(self._conn.send(h11.EndOfMessage()))

    def next_cycle(self) -> None:
        """Get ready to send the next request on this (kept-alive) connection."""
        self._conn.start_next_cycle()
        self.response = None

    async def receive_body(self) -> bytes:
        """The rest of the response body, up to its end."""
        await self.receive_response()
        body = b""
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return body
            else:
                raise AssertionError(f"unexpected {event!r} in a response body")

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    self.response = event
                    SEEN_RESPONSES.append(
                        (self._method, self.base_url + self._target, event.status_code)
                    )
                return event
            self._conn.receive_data(await self._stream.receive_some(65536))

    async def receive_response(self) -> h11.Response:
        """Read up to the end of the response head."""
        while self.response is None:
            await self.next_event()
        return self.response

    async def receive_until(self, marker: bytes) -> bytes:
        """Body bytes up to and including the first `marker` (or the end)."""
        await self.receive_response()
        body = b""
        while marker not in body:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return body


async def raw_request(
    base_url: str,
    method: str,
    target: str | bytes,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """Send one request with exactly `target` on the request line; read it all."""
    with trio.fail_after(10):
        conn = await RawConnection.open(base_url)
        try:
            await conn.send(method, target, headers, body)
            chunks: list[bytes] = []
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            await conn.aclose()
    response = conn.response
    assert response is not None
    header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
    return RawResponse(
        response.status_code, {k: v for k, v in header_list}, header_list, b"".join(chunks)
    )


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: its type and its data lines joined by LF."""

    event: str
    data: str


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of an SSE response body, as the EventSource rules read them."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


async def read_sse(response: httpx.Response) -> list[SseEvent]:
    """Every event until the server ends the response."""
    return [event async for event in sse_events(response)]


# The one sanctioned polling loop (see the module rule): the watcher counts and
# the store size live in the server and announce nothing a test could wait on.
async def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:  # noqa: ASYNC109
    """Wait (bounded) for server-side state that no event announces."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(POLL_INTERVAL)


async def wait_for_watchers(
    server: RunningServer,
    name: str,
    count: int,
    timeout: float = 10,  # noqa: ASYNC109
) -> None:
    """Wait until exactly `count` readers are watching stream `name`."""
    watchers = server.service.watchers
    await wait_until(lambda: watchers.statistics().per_stream.get(name, 0) == count, timeout)


async def wait_for_no_watchers(server: RunningServer, timeout: float = 10) -> None:  # noqa: ASYNC109
    """Wait until no reader is watching any stream."""
    watchers = server.service.watchers
    await wait_until(lambda: watchers.statistics().total == 0, timeout)
    assert watchers.statistics().per_stream == {}


async def create_stream(
    client: httpx.AsyncClient,
    url: str,
    content_type: str = "text/plain",
    body: bytes = b"",
    **headers: str,
) -> httpx.Response:
    """PUT a stream and check it was created."""
    all_headers = {
        "Content-Type": content_type,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    response = await client.put(url, content=body, headers=all_headers)
    assert response.status_code == 201, response.text
    return response


def assert_short_text_error(
    status: int, headers: httpx.Headers | dict[str, str], body: str
) -> None:
    """A 4xx answered with a short, uncacheable, plain-text reason."""
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"].startswith("text/plain"), headers
    assert headers["cache-control"] == "no-store"
    assert 0 < len(body) <= 200, body
    assert "Traceback" not in body
    assert "<html" not in body.lower()


class FakeClock:
    """A wall clock the test moves by hand; install it as `service.clock`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
