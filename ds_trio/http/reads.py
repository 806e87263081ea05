"""Read routes: catch-up GET, long-poll and Server-Sent Events (spec 5.6–5.8).

Live readers run inside their request's task, which Hypercorn and Quart-Trio
scope to a nursery: a client disconnect cancels the task, and with it the wait.
Every wait goes through `StreamWatchers.watch`, opened before the store read it
follows, so an append landing between the read and the wait is never missed.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import trio
from quart import Response

from ..protocol.caching import (
    CACHE_NO_STORE,
    GZIP_MIN_BYTES,
    accepts_gzip,
    cacheable,
    cursor_at_least,
    etag_for,
    etag_matches,
    gzip_etag,
    next_cursor,
)
from ..limits import LiveReaderLimit
from ..protocol.errors import (
    BadRequest,
    InvalidOffset,
    ProtocolError,
    StreamGone,
    StreamNotFound,
)
from ..protocol.json_mode import render_json_array
from ..protocol.offsets import format_offset, parse_read_offset
from ..protocol.sse import control_event, data_event, uses_base64
from ..live import Watch
from ..store.base import ReadResult
from .access import client_key, principal
from .common import body_response, empty_response, list_header, single_arg

if TYPE_CHECKING:
    from .app import StreamService

__all__ = ["handle_get"]

GZIP_LEVEL: Final = 6
INLINE_GZIP_BYTES: Final = 64 * 1024  # larger bodies are compressed in a worker thread


def _body(result: ReadResult) -> bytes:
    if result.meta.is_json:
        return render_json_array(result.pieces)
    return b"".join(result.pieces)


class _LiveSlice:
    """A live read that the readers woken together share, and what they render of it.

    The body, and the SSE frames for each cursor handed out (readers woken
    together mostly get the same one), are built once, by the first reader
    that needs them.
    """

    __slots__ = ("_body", "_sse_frames", "result")

    def __init__(self, result: ReadResult) -> None:
        self.result = result
        self._body: bytes | None = None
        self._sse_frames: dict[str, bytes] = {}

    def body(self) -> bytes:
        if self._body is None:
            self._body = _body(self.result)
        return self._body

    def sse_frames(self, base64_encoded: bool, cursor: str) -> bytes:
        """The data event (if any) and the control event that carries `cursor`."""
        frames = self._sse_frames.get(cursor)
        if frames is None:
            result = self.result
            data = data_event(self.body(), base64_encoded=base64_encoded) if result.pieces else b""
            control = control_event(
                format_offset(result.next_position),
                cursor=cursor,
                up_to_date=result.up_to_date,
                closed=result.at_end,
            )
            frames = self._sse_frames[cursor] = data + control
        return frames


async def _live_read(
    service: StreamService, change: Watch, name: str, position: int | None
) -> _LiveSlice:
    """The store read at `position`, shared with the readers of the same generation."""
    max_bytes = service.config.max_read_bytes

    async def fetch() -> _LiveSlice:
        return _LiveSlice(await service.store.read(name, position, max_bytes, service.clock()))

    return await change.read_once(position, fetch)


def _live_readers(service: StreamService) -> LiveReaderLimit:
    assert service.access is not None
    return service.access.live_readers


def _read_headers(result: ReadResult) -> dict[str, str]:
    headers = {
        "Content-Type": result.meta.content_type,
        "Stream-Next-Offset": format_offset(result.next_position),
    }
    if result.up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if result.at_end:
        headers["Stream-Closed"] = "true"
    return headers


async def handle_get(service: StreamService, name: str) -> Response:
    """Dispatch a GET on the `live` query parameter."""
    raw_offset = single_arg("offset")
    start = parse_read_offset(raw_offset)
    live = single_arg("live")
    position = None if start.offset is None else start.offset.position
    if live is None:
        return await _catch_up(service, name, position)
    if live == "ws":
        raise BadRequest("live=ws needs a WebSocket handshake (Upgrade: websocket)")
    if live not in ("long-poll", "sse"):
        raise BadRequest("live must be 'long-poll' or 'sse'")
    if raw_offset is None:
        raise BadRequest(f"live={live} requires an offset")
    cursor = single_arg("cursor")
    if live == "long-poll":
        return await _long_poll(service, name, position, cursor)
    return await _sse(service, name, position, cursor)


def _cached_headers(
    service: StreamService, result: ReadResult, *, gzip_variant: bool = False
) -> dict[str, str]:
    """Headers of a catch-up style response: its ETag, and whether caches may keep it."""
    headers = _read_headers(result)
    etag = etag_for(
        result.meta.stream_id,
        format_offset(result.start),
        headers["Stream-Next-Offset"],
        closed=result.at_end,
    )
    headers["ETag"] = gzip_etag(etag) if gzip_variant else etag
    if result.pieces or result.at_end:
        # Shared caches must not hand one caller's authorized read to another.
        visibility = "private" if principal() is not None else service.config.cache_visibility
        headers["Cache-Control"] = cacheable(visibility)
    else:
        headers["Cache-Control"] = CACHE_NO_STORE
    return headers


def _not_modified(headers: dict[str, str]) -> Response | None:
    """A 304 when the client's If-None-Match names this response's ETag."""
    if not etag_matches(list_header("If-None-Match"), headers["ETag"]):
        return None
    del headers["Content-Type"]
    return empty_response(304, headers)


def _data_response(service: StreamService, result: ReadResult, body: bytes) -> Response:
    """A response carrying `result` as `body`, or 304 when the client has it."""
    headers = _cached_headers(service, result)
    not_modified = _not_modified(headers)
    if not_modified is not None:
        return not_modified
    return body_response(200, _counted(service, body), headers)


def _counted(service: StreamService, body: bytes) -> bytes:
    service.metrics.bytes_out.inc(len(body))
    return body


async def _gzip(service: StreamService, body: bytes) -> bytes:
    """`body` gzip-encoded, the same bytes every time; large bodies off the event loop."""
    compress = functools.partial(gzip.compress, body, GZIP_LEVEL, mtime=0)
    if len(body) < INLINE_GZIP_BYTES:
        return compress()
    return await trio.to_thread.run_sync(compress, limiter=service.compress_limiter)


async def _catch_up(service: StreamService, name: str, position: int | None) -> Response:
    config = service.config
    result = await service.store.read(name, position, config.max_read_bytes, service.clock())
    if position is None:  # offset=now: the tail, never cached, no ETag
        headers = _read_headers(result)
        headers["Cache-Control"] = CACHE_NO_STORE
        return body_response(200, _counted(service, _body(result)), headers)
    compress = (
        sum(map(len, result.pieces)) >= GZIP_MIN_BYTES
        and accepts_gzip(list_header("Accept-Encoding"))
    )
    headers = _cached_headers(service, result, gzip_variant=compress)
    headers["Vary"] = "Accept-Encoding"
    not_modified = _not_modified(headers)
    if not_modified is not None:
        return not_modified
    body = _body(result)
    if compress:
        body = await _gzip(service, body)
        headers["Content-Encoding"] = "gzip"
    return body_response(200, _counted(service, body), headers)


async def _long_poll(
    service: StreamService, name: str, position: int | None, client_cursor: str | None
) -> Response:
    config = service.config
    deadline = trio.current_time() + config.long_poll_timeout
    live_readers = _live_readers(service)
    with live_readers.hold(client_key(service)), service.metrics.live("long-poll"):
        while True:
            with service.watchers.watch(name) as change:
                live_slice = await _live_read(service, change, name, position)
                result = live_slice.result
                position = result.start
                if not result.pieces and not result.meta.closed and not service.watchers.closed:
                    with trio.move_on_at(deadline):
                        await change.wait()
                    if not change.changed:
                        break  # timed out with nothing new
                    continue
            break
    cursor = next_cursor(service.clock(), client_cursor, service.jitter())
    if result.pieces:
        response = _data_response(service, result, live_slice.body())
        response.headers["Stream-Cursor"] = cursor
        return response
    headers = _read_headers(result)
    headers["Stream-Up-To-Date"] = "true"
    headers["Cache-Control"] = CACHE_NO_STORE
    if not result.meta.closed:
        headers["Stream-Cursor"] = cursor
    del headers["Content-Type"]
    return empty_response(204, headers)


async def _sse(
    service: StreamService, name: str, position: int | None, client_cursor: str | None
) -> Response:
    meta = await service.store.head(name, service.clock())  # 404 before the stream starts
    if position is not None and position > meta.tail:  # 400 before the stream starts
        raise InvalidOffset("offset is beyond the tail of the stream")
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    base64_encoded = uses_base64(meta.media_type)
    if base64_encoded:
        headers["Stream-SSE-Data-Encoding"] = "base64"
    client = client_key(service)
    _live_readers(service).check(client)  # 429 or 503 now, before the event stream starts
    frames = _sse_frames(service, name, position, client_cursor, base64_encoded, client)
    response = Response(frames, status=200)
    response.headers.update(headers)
    response.timeout = None
    return response


async def _sse_frames(
    service: StreamService,
    name: str,
    position: int | None,
    client_cursor: str | None,
    base64_encoded: bool,
    client: str,
) -> AsyncIterator[bytes]:
    """Events until the stream ends, disappears, the interval passes, or shutdown.

    Nothing here yields inside a cancel scope or a watch: each wait finishes
    before the frames it led to are handed to the server.
    """
    config = service.config
    deadline = trio.current_time() + config.sse_reconnect_interval
    sent_control = False
    cursor: str | None = None  # the last one sent
    live_readers = _live_readers(service)
    try:
        live_readers.check(client)
    except ProtocolError:
        return  # the last places went to others since the check: the client retries
    with live_readers.hold(client), service.metrics.live("sse"):
        while True:
            with service.watchers.watch(name) as change:
                try:
                    live_slice = await _live_read(service, change, name, position)
                except (StreamNotFound, StreamGone, InvalidOffset):
                    return  # deleted, expired, or re-created shorter: end the event stream
                result = live_slice.result
                position = result.start
                idle = sent_control and not result.pieces and not result.meta.closed
                if idle:
                    if service.watchers.closed:
                        return
                    with trio.move_on_at(deadline):
                        await change.wait()
                    if not change.changed:
                        return  # reconnect interval reached
                    continue
            position = result.next_position
            if cursor is None:
                cursor = next_cursor(service.clock(), client_cursor, service.jitter())
            else:
                cursor = cursor_at_least(service.clock(), cursor)
            frames = live_slice.sse_frames(base64_encoded, cursor)
            service.metrics.bytes_out.inc(len(frames))
            yield frames
            sent_control = True
            if result.at_end or trio.current_time() >= deadline or service.watchers.closed:
                return  # shutting down: end after this control event; clients resume from it
