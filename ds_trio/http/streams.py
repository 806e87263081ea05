"""Write-side and metadata routes: PUT (create), POST (append/close), HEAD, DELETE."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

import trio
from quart import Response, request

from ..protocol.errors import BadRequest, InvalidOffset, SeqGap
from ..protocol.forks import ForkRequest, parse_sub_offset
from ..protocol.headers import (
    ExpiresAt,
    is_true_flag,
    media_type,
    parse_expires_at,
    parse_stream_seq,
    parse_ttl,
)
from ..protocol.offsets import parse_read_offset
from ..protocol.paths import canonical_stream_name
from ..protocol.json_mode import JSON_MEDIA_TYPE, flatten_json_body
from ..protocol.producers import parse_producer_headers
from ..protocol.streams import AppendOutcome, AppendRequest, CreateRequest
from .common import (
    after_response,
    empty_response,
    header,
    meta_headers,
    public_base_url,
    single_header,
)
from .subscriptions import notify_append, notify_delete

if TYPE_CHECKING:
    from .app import StreamService

__all__ = ["handle_delete", "handle_head", "handle_post", "handle_put"]

DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
_FORK_HEADERS: Final = ("Stream-Fork-Offset", "Stream-Fork-Sub-Offset")


def _records(body: bytes, media: str, *, on_create: bool) -> tuple[bytes, ...]:
    if not body:
        return ()
    if media == JSON_MEDIA_TYPE:
        return tuple(flatten_json_body(body, allow_empty_array=on_create))
    return (body,)


def _fork_request(
    service: StreamService,
    forked_from: str,
    content_type: str | None,
    ttl: int | None,
    expires_at: ExpiresAt | None,
    closed: bool,
    body: bytes,
) -> ForkRequest:
    prefix = service.config.stream_root + "/"
    source_path = forked_from.strip().split("?", 1)[0]
    if not source_path.startswith(prefix):
        raise BadRequest(f"Stream-Forked-From must be a stream path under {prefix}")
    raw_offset = single_header("Stream-Fork-Offset")
    anchor = None
    if raw_offset is not None:
        try:
            start = parse_read_offset(raw_offset.strip())
        except InvalidOffset as exc:
            raise InvalidOffset("malformed Stream-Fork-Offset") from exc
        anchor = None if start.offset is None else start.offset.position
    return ForkRequest(
        source=canonical_stream_name(source_path[len(prefix) :]),
        anchor=anchor,
        sub_offset=parse_sub_offset(single_header("Stream-Fork-Sub-Offset")),
        content_type=content_type,
        media_type=media_type(content_type) if content_type else None,
        ttl=ttl,
        expires_at=expires_at,
        closed=closed,
        body=body,
    )


async def handle_put(service: StreamService, name: str) -> Response:
    """Create a stream or a fork, or confirm an identical one (spec 5.1, 4.2)."""
    raw_type = single_header("Content-Type")
    content_type = raw_type.strip() if raw_type and raw_type.strip() else None
    ttl = parse_ttl(single_header("Stream-TTL"))
    expires_at = parse_expires_at(single_header("Stream-Expires-At"))
    if ttl is not None and expires_at is not None:
        raise BadRequest("Stream-TTL and Stream-Expires-At cannot both be set")
    closed = is_true_flag(header("Stream-Closed"))
    forked_from = single_header("Stream-Forked-From")
    if forked_from is None and any(header(h) is not None for h in _FORK_HEADERS):
        raise BadRequest("Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From")
    body = await request.get_data(cache=False)
    if forked_from is not None:
        fork = _fork_request(service, forked_from, content_type, ttl, expires_at, closed, body)
        decision = await service.store.fork(name, fork, service.clock())
    else:
        content_type = content_type or DEFAULT_CONTENT_TYPE
        media = media_type(content_type)
        create = CreateRequest(
            content_type=content_type,
            media_type=media,
            ttl=ttl,
            expires_at=expires_at,
            closed=closed,
            records=_records(body, media, on_create=True),
        )
        decision = await service.store.create(name, create, service.clock())
    headers = meta_headers(decision.meta)
    if decision.created:
        # From the canonical name: request.url is percent-decoded (a%2Fb would read a/b).
        base = public_base_url(service.config.trusted_proxies)
        headers["Location"] = f"{base}{service.config.stream_root}/{name}"
        after_response(functools.partial(service.watchers.notify, name))
        if decision.meta.tail > 0:
            await notify_append(service, name)
    return empty_response(201 if decision.created else 200, headers)


def _append_response(outcome: AppendOutcome, has_producer: bool) -> Response:
    headers = {"Stream-Next-Offset": outcome.next_offset}
    if outcome.closed:
        headers["Stream-Closed"] = "true"
    if outcome.producer is not None:
        headers["Producer-Epoch"] = str(outcome.producer.epoch)
        headers["Producer-Seq"] = str(outcome.producer.last_seq)
    status = 200 if has_producer and outcome.appended else 204
    return empty_response(status, headers)


async def handle_post(service: StreamService, name: str) -> Response:
    """Append, close, or append-and-close (spec 5.2, 5.2.1, 5.3)."""
    producer = parse_producer_headers(
        single_header("Producer-Id"), single_header("Producer-Epoch"), single_header("Producer-Seq")
    )
    stream_seq = parse_stream_seq(single_header("Stream-Seq"))
    close = is_true_flag(header("Stream-Closed"))
    body = await request.get_data(cache=False)
    media: str | None = None
    records: tuple[bytes, ...] = ()
    if body:
        raw_type = single_header("Content-Type")
        if raw_type is None or not raw_type.strip():
            raise BadRequest("Content-Type is required with a body")
        media = media_type(raw_type)
        records = _records(body, media, on_create=False)
    append = AppendRequest(media, records, close, producer, stream_seq)
    outcome = await _append_waiting_out_gaps(service, name, append)
    if outcome.changed:  # readers wake once the writer has its acknowledgement
        after_response(functools.partial(service.watchers.notify, name))
    if outcome.appended:
        await notify_append(service, name)
        service.metrics.appends.inc()
        service.metrics.bytes_in.inc(sum(len(record) for record in records))
    return _append_response(outcome, producer is not None)


async def _append_waiting_out_gaps(
    service: StreamService, name: str, append: AppendRequest
) -> AppendOutcome:
    """Append; a producer seq gap first waits a moment for its predecessors.

    Pipelined requests from one producer may arrive out of order; a request
    that skips ahead waits (bounded by `producer_gap_wait`) for the stream to
    change and retries, so only a real gap is answered with 409.
    """
    if append.producer is None:  # only a producer's seq can run ahead
        return await service.store.append(name, append, service.clock())
    deadline = trio.current_time() + service.config.producer_gap_wait
    while True:
        with service.watchers.watch(name) as change:
            try:
                return await service.store.append(name, append, service.clock())
            except SeqGap:
                if trio.current_time() >= deadline or service.watchers.closed:
                    raise
            with trio.move_on_at(deadline):
                await change.wait()


async def handle_head(service: StreamService, name: str) -> Response:
    """Stream metadata without a body; does not extend a sliding TTL (spec 5.5)."""
    meta = await service.store.head(name, service.clock())
    headers = meta_headers(meta)
    if meta.ttl is not None:
        headers["Stream-TTL"] = str(meta.ttl)
    if meta.expires_at is not None:
        headers["Stream-Expires-At"] = meta.expires_at.text
    headers["Cache-Control"] = "no-store"
    return empty_response(200, headers)


async def handle_delete(service: StreamService, name: str) -> Response:
    """Delete the stream and release its live readers (spec 5.4)."""
    await service.store.delete(name, service.clock())
    service.watchers.notify(name)
    await notify_delete(service, name)
    return empty_response(204, {})
