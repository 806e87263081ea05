"""WebSocket live reads: `GET {stream}?offset=X&live=ws` with an Upgrade (spec 11.1 extension).

The reads of SSE (`reads._sse_frames`) carried as WebSocket messages: for each
batch a data message (when it holds data), then a control message with the
same fields and cursor rules; `ds_trio.protocol.ws` has their format. The
connection ends as an SSE response does, with a close frame saying why: 1000
after the control message that says `streamClosed`, at the reconnect interval,
or when the stream goes away; 1001 when the server shuts down; 1013 when the
store fails.

Everything that can refuse the read (access checks, which ran before the
handshake, the stream, the offset, the live-reader limit) is decided before
the handshake is accepted, so a refusal is a plain HTTP response with its status.

Backpressure: `websocket.send` returns once Hypercorn has handed the frame to
the socket (its `send_all`), and the next batch is read only after that, so a
reader that stops reading keeps one batch waiting on the server, never more.
What the client sends is read and dropped: Hypercorn reads the connection on
only while the app takes its messages, and must, to see the client leave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
from quart import websocket

from ..live import Watch
from ..protocol.caching import cursor_at_least, next_cursor
from ..protocol.errors import (
    BadRequest,
    InvalidOffset,
    OriginNotAllowed,
    ProtocolError,
    StreamGone,
    StreamNotFound,
)
from ..protocol.json_mode import render_json_array
from ..protocol.offsets import format_offset, parse_read_offset
from ..protocol.ws import Framing, control_message, data_message, framing_for, whole_characters
from ..store.base import ReadResult
from .access import client_key
from .common import header, single_arg

if TYPE_CHECKING:
    from .app import StreamService

__all__ = ["handle_websocket"]

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # the server is shutting down: reconnect (elsewhere)
CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_HANDSHAKE_WAIT: Final = 5.0  # seconds for the client to answer the server's close frame
MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455 5.5: control frames carry 125 bytes, 2 for the code

_REASON_CLOSED: Final = "stream closed"
_REASON_INTERVAL: Final = "reconnect interval: resume from the last streamNextOffset"
_REASON_GONE: Final = "the stream was deleted or expired"
_REASON_SHUTDOWN: Final = "server shutting down: resume from the last streamNextOffset"


class _Batch:
    """One store read as WebSocket messages, built once for the readers woken together."""

    __slots__ = ("_controls", "data", "data_bytes", "next_position", "result")

    def __init__(self, result: ReadResult, framing: Framing) -> None:
        self.result = result
        self.next_position = result.next_position
        self.data: str | bytes | None = None
        self.data_bytes = 0
        self._controls: dict[str, str] = {}
        if not result.pieces:
            return
        if framing is Framing.JSON:
            payload = render_json_array(result.pieces)
        else:
            payload = b"".join(result.pieces)
        if framing is Framing.TEXT and not result.up_to_date:
            # Cut at max_read_bytes: a character split there goes out whole, next time.
            whole = whole_characters(payload)
            if 0 < whole < len(payload):
                self.next_position -= len(payload) - whole
                payload = payload[:whole]
        data = self.data = data_message(payload, framing)
        self.data_bytes = len(data) if isinstance(data, bytes) else len(data.encode())

    def control(self, cursor: str) -> str:
        """The control message after this batch, carrying `cursor`."""
        message = self._controls.get(cursor)
        if message is None:
            result = self.result
            message = self._controls[cursor] = control_message(
                format_offset(self.next_position),
                cursor=cursor,
                up_to_date=result.up_to_date,
                closed=result.at_end,
            )
        return message


def _check_origin(cors_origin: str) -> None:
    """Refuse a browser page from an origin `cors_origin` leaves out.

    Browsers apply CORS to fetch and EventSource, not to WebSockets; without
    this, a page from anywhere could read through a WebSocket what CORS keeps
    from it. Clients that are not browsers send no Origin.
    """
    allowed = {origin.strip() for origin in cors_origin.split(",") if origin.strip()}
    origin = header("Origin")
    if origin is not None and "*" not in allowed and origin not in allowed:
        raise OriginNotAllowed(f"WebSocket reads are not open to pages from {origin}")


async def handle_websocket(service: StreamService, name: str) -> None:
    """Serve one WebSocket live read of stream `name`; refuse it before the handshake.

    Raises:
        BadRequest, InvalidOffset: the query is not a live=ws read at a valid offset (400).
        OriginNotAllowed: a page from an origin outside `cors_origin` (403).
        StreamNotFound, StreamGone: no such stream (404, 410).
        TooManyRequests, Overloaded: over the live-reader limits (429, 503).
    """
    if single_arg("live") != "ws":
        raise BadRequest("a WebSocket read needs live=ws")
    raw_offset = single_arg("offset")
    if raw_offset is None:
        raise BadRequest("live=ws requires an offset")
    start = parse_read_offset(raw_offset)
    position = None if start.offset is None else start.offset.position
    client_cursor = single_arg("cursor")
    _check_origin(service.config.cors_origin)
    meta = await service.store.head(name, service.clock())
    if position is not None and position > meta.tail:
        raise InvalidOffset("offset is beyond the tail of the stream")
    access = service.access
    assert access is not None
    with access.live_readers.hold(client_key(service)), service.metrics.live("ws"):
        await websocket.accept()
        service.metrics.requests.labels("GET", "101").inc()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_discard_messages)
            code, reason = await _send_batches(
                service, name, position, client_cursor, framing_for(meta.media_type)
            )
            nursery.cancel_scope.cancel()
    await _close(code, reason)


def _close_reason(text: str) -> str:
    """`text` cut to fit a close frame (123 bytes of UTF-8)."""
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


async def _discard_messages() -> None:
    """Read and drop what the client sends, until cancelled."""
    while True:
        await websocket.receive()


async def _close(code: int, reason: str) -> None:
    """Send the close frame, then give the client a moment to answer it.

    The answer ends the connection (Hypercorn closes it, and the connection's
    nursery cancels this task); without the wait, the socket could close with
    the client's last bytes unread, and a reset lose the close frame.
    """
    await websocket.close(code, reason)
    with trio.move_on_after(CLOSE_HANDSHAKE_WAIT):
        await _discard_messages()


async def _send_batches(
    service: StreamService,
    name: str,
    position: int | None,
    client_cursor: str | None,
    framing: Framing,
) -> tuple[int, str]:
    """Batches until the stream ends or goes, the interval passes, or shutdown; why it ended.

    Each wait ends before the messages it led to are sent, and each send ends
    before the next read: nothing is awaited inside a watch but the store.
    """
    config = service.config
    deadline = trio.current_time() + config.sse_reconnect_interval
    cursor: str | None = None  # the last one sent
    max_bytes = config.max_read_bytes
    while True:
        with service.watchers.watch(name) as change:
            try:
                batch = await _shared_read(service, change, name, position, max_bytes, framing)
            except (StreamNotFound, StreamGone, InvalidOffset):
                return CLOSE_NORMAL, _REASON_GONE  # deleted, expired, or re-created shorter
            except ProtocolError as error:  # the store failed: retry
                return CLOSE_TRY_AGAIN_LATER, _close_reason(error.message)
            result = batch.result
            position = result.start
            idle = cursor is not None and not result.pieces and not result.meta.closed
            if idle:
                if service.watchers.closed:
                    return CLOSE_GOING_AWAY, _REASON_SHUTDOWN
                with trio.move_on_at(deadline):
                    await change.wait()
                if not change.changed:
                    return CLOSE_NORMAL, _REASON_INTERVAL
                continue
        position = batch.next_position
        if cursor is None:
            cursor = next_cursor(service.clock(), client_cursor, service.jitter())
        else:
            cursor = cursor_at_least(service.clock(), cursor)
        control = batch.control(cursor)
        if batch.data is not None:
            service.metrics.bytes_out.inc(batch.data_bytes)
            await websocket.send(batch.data)
        service.metrics.bytes_out.inc(len(control))
        await websocket.send(control)
        if result.at_end:
            return CLOSE_NORMAL, _REASON_CLOSED
        if service.watchers.closed:
            return CLOSE_GOING_AWAY, _REASON_SHUTDOWN  # clients resume from the control just sent
        if trio.current_time() >= deadline:
            return CLOSE_NORMAL, _REASON_INTERVAL


async def _shared_read(
    service: StreamService,
    change: Watch,
    name: str,
    position: int | None,
    max_bytes: int,
    framing: Framing,
) -> _Batch:
    """The batch at `position`, read once for the WebSocket readers of the same generation."""

    async def fetch() -> _Batch:
        return _Batch(await service.store.read(name, position, max_bytes, service.clock()), framing)

    return await change.read_once(("ws", position), fetch)
