"""Forks: every rule about branching a stream (spec 4.2), as pure decisions.

A fork shares its source's offset space. It holds no copy of the source's
data: its metadata lists the segments of ancestors' records it inherits
(`StreamMeta.inherited`, flattened along the whole chain, so a read never
walks the chain), and its own records begin at its fork point (`base`).
A source counts the live forks that read it (`fork_count`); deleting a
source that still has forks only soft-deletes it, and removing the last fork
of a soft-deleted source removes that source too, up the chain.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from .errors import BadRequest, ConfigMismatch, ContentTypeMismatch, StreamGone, StreamNotFound
from .headers import ExpiresAt
from .json_mode import JSON_MEDIA_TYPE, flatten_json_body
from .streams import CreateDecision, ForkOrigin, Segment, StreamMeta

__all__ = [
    "DeleteAction",
    "ForkRequest",
    "check_fork_source",
    "ForkDecision",
    "decide_delete",
    "decide_fork",
    "expire_action",
    "fork_point",
    "match_existing_fork",
    "new_fork",
    "parse_sub_offset",
    "release_fork",
]

_SUB_OFFSET_RE: Final = re.compile(r"0|[1-9][0-9]*")


def parse_sub_offset(value: str | None) -> int:
    """Stream-Fork-Sub-Offset: a non-negative decimal integer (absent means 0).

    Raises:
        BadRequest: signs, leading zeros, decimals or junk.
    """
    if value is None:
        return 0
    if not _SUB_OFFSET_RE.fullmatch(value) or len(value) > 18:
        raise BadRequest("Stream-Fork-Sub-Offset must be a non-negative integer")
    return int(value)


@dataclass(frozen=True, slots=True)
class ForkRequest:
    """A validated PUT with Stream-Forked-From."""

    source: str  # canonical name of the source stream
    anchor: int | None = None  # Stream-Fork-Offset; None means the source's tail
    sub_offset: int = 0
    content_type: str | None = None  # None: inherit the source's
    media_type: str | None = None
    ttl: int | None = None
    expires_at: ExpiresAt | None = None
    closed: bool = False
    body: bytes = b""

    def __post_init__(self) -> None:
        if self.ttl is not None and self.expires_at is not None:
            raise BadRequest("Stream-TTL and Stream-Expires-At cannot both be set")


def match_existing_fork(existing: StreamMeta, request: ForkRequest) -> CreateDecision:
    """PUT of a fork on a path that holds a stream: 200 if it is this fork.

    Unspecified content type, TTL/expiry and offset match what the fork
    resolved them to when it was created.

    Raises:
        ConfigMismatch: another stream, or a fork with another configuration.
    """
    if existing.soft_deleted:
        raise ConfigMismatch("stream was deleted and is kept for its forks")
    origin = existing.fork
    if (
        origin is None
        or origin.source != request.source
        or (request.anchor is not None and request.anchor != origin.anchor)
        or request.sub_offset != origin.sub_offset
        or (request.media_type is not None and request.media_type != existing.media_type)
        or (request.ttl is not None and request.ttl != existing.ttl)
        or (request.expires_at is not None and request.expires_at != existing.expires_at)
        or request.closed != existing.closed
    ):
        raise ConfigMismatch("stream exists with a different configuration")
    return CreateDecision(existing, created=False)


def check_fork_source(source: StreamMeta | None, request: ForkRequest) -> int:
    """Validate the source of a new fork; return the anchor position.

    Raises:
        StreamNotFound: no such source (404).
        ConfigMismatch: the source is soft-deleted (409).
        ContentTypeMismatch: the requested content type is not the source's (409).
        BadRequest: the fork offset is past the source's tail (400).
    """
    if source is None:
        raise StreamNotFound("fork source stream not found")
    if source.soft_deleted:
        raise ConfigMismatch("fork source was deleted")
    if request.media_type is not None and request.media_type != source.media_type:
        raise ContentTypeMismatch(f"a fork must have its source's content type ({source.media_type})")
    anchor = source.tail if request.anchor is None else request.anchor
    if anchor > source.tail:
        raise BadRequest("Stream-Fork-Offset is beyond the source's tail")
    return anchor


def fork_point(
    source: StreamMeta, anchor: int, sub_offset: int, records: Iterable[tuple[int, bytes]]
) -> int:
    """The position a fork diverges at: the anchor refined by the sub-offset.

    For JSON sources the sub-offset counts messages past the anchor, for all
    others bytes. `records` are the source's records from the anchor on, as
    a read would see them; they are only consulted for JSON sources.

    Raises:
        BadRequest: the sub-offset reaches past the source's tail.
    """
    if sub_offset == 0:
        return anchor
    if source.media_type != JSON_MEDIA_TYPE:
        if anchor + sub_offset > source.tail:
            raise BadRequest("Stream-Fork-Sub-Offset reaches past the source's data")
        return anchor + sub_offset
    remaining = sub_offset
    for position, data in records:
        if position < anchor:
            continue
        remaining -= 1
        if remaining == 0:
            return position + len(data)
    raise BadRequest("Stream-Fork-Sub-Offset counts more messages than the source has")


def _inherit_segments(source: StreamMeta, point: int) -> tuple[Segment, ...]:
    kept = [
        Segment(s.stream_id, s.start, min(s.end, point))
        for s in (*source.inherited, Segment(source.stream_id, source.base, source.tail))
        if s.start < point
    ]
    return tuple(s for s in kept if s.end > s.start)


@dataclass(frozen=True, slots=True)
class ForkDecision:
    """A new fork, its initial records, and its source with one more fork.

    `source` is None when the PUT only confirmed an existing fork.
    """

    created: CreateDecision
    source: StreamMeta | None = None


def decide_fork(
    existing: StreamMeta | None,
    source: StreamMeta | None,
    request: ForkRequest,
    *,
    records: Callable[[StreamMeta, int], Iterable[tuple[int, bytes]]],
    now: float,
    new_id: str,
) -> ForkDecision:
    """The whole fork PUT: confirm `existing`, or validate `source` and branch it.

    Args:
        existing: what the target path holds (expired streams excluded).
        source: the source stream, looked up only when `existing` is None.
        records: the store's reader, `records(meta, position)`, used to find
            JSON sub-offsets.

    Raises:
        The errors of `match_existing_fork`, `check_fork_source` and `fork_point`.
    """
    if existing is not None:
        return ForkDecision(match_existing_fork(existing, request))
    anchor = check_fork_source(source, request)
    assert source is not None
    point = fork_point(source, anchor, request.sub_offset, records(source, anchor))
    return new_fork(source, request, anchor=anchor, point=point, now=now, new_id=new_id)


def new_fork(
    source: StreamMeta,
    request: ForkRequest,
    *,
    anchor: int,
    point: int,
    now: float,
    new_id: str,
) -> ForkDecision:
    """Build a fork of `source` diverging at `point` (from `fork_point`).

    TTL and expiry follow the spec's table: the fork's own when requested,
    otherwise a copy of the source's TTL value or absolute expiry.

    Raises:
        BadRequest: the initial body is not valid for the content type.
    """
    media = source.media_type
    records: tuple[bytes, ...] = ()
    if request.body:
        records = (
            tuple(flatten_json_body(request.body, allow_empty_array=True))
            if media == JSON_MEDIA_TYPE
            else (request.body,)
        )
    ttl, expires_at = request.ttl, request.expires_at
    if ttl is None and expires_at is None:
        ttl, expires_at = source.ttl, source.expires_at
    meta = StreamMeta(
        stream_id=new_id,
        content_type=request.content_type or source.content_type,
        media_type=media,
        tail=point + sum(len(record) for record in records),
        ttl=ttl,
        expires_at=expires_at,
        closed=request.closed,
        touched_at=now,
        base=point,
        inherited=_inherit_segments(source, point),
        fork=ForkOrigin(request.source, source.stream_id, anchor, request.sub_offset),
    )
    created = CreateDecision(meta, created=True, records=records)
    return ForkDecision(created, replace(source, fork_count=source.fork_count + 1))


class DeleteAction:
    """What deleting a stream does."""

    SOFT: Final = "soft"  # keep it for its forks; it answers 410 from now on
    REMOVE: Final = "remove"  # remove it, and release its hold on its source


def decide_delete(meta: StreamMeta) -> str:
    """Soft-delete a stream that still has forks, remove any other.

    Raises:
        StreamGone: it is already soft-deleted (410).
    """
    if meta.soft_deleted:
        raise StreamGone("stream was deleted")
    return DeleteAction.SOFT if meta.fork_count > 0 else DeleteAction.REMOVE


def release_fork(source: StreamMeta) -> tuple[StreamMeta, bool]:
    """`source` after one of its forks went away, and whether to remove it now.

    A soft-deleted source whose last fork is gone is removed; the caller then
    releases that source's own hold on *its* source, up the chain.
    """
    released = replace(source, fork_count=max(0, source.fork_count - 1))
    return released, released.soft_deleted and released.fork_count == 0


def expire_action(meta: StreamMeta) -> str:
    """What expiry does: a stream with forks is kept for them (soft-deleted)."""
    return DeleteAction.SOFT if meta.fork_count > 0 else DeleteAction.REMOVE
