"""Stream state and the rules that change it.

Rule: every decision about creating, appending to, closing or expiring a
stream is made here, as a pure function of the stored state and the request.
A store loads the state, calls the decision, and persists what it returns, all
inside one transaction; no store re-implements any of these rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from .errors import (
    BadRequest,
    ProtocolError,
    ConfigMismatch,
    ContentTypeMismatch,
    SeqConflict,
    StreamClosed,
)
from .headers import ExpiresAt
from .json_mode import JSON_MEDIA_TYPE
from .offsets import format_offset
from .producers import (
    ProducerAccepted,
    ProducerClaim,
    ProducerDuplicate,
    ProducerState,
    check_producer,
)

__all__ = [
    "AppendDecision",
    "AppendOutcome",
    "AppendRequest",
    "CreateDecision",
    "CreateRequest",
    "ForkOrigin",
    "ReadSlice",
    "RecordData",
    "Segment",
    "StreamMeta",
    "clip_records",
    "decide_append",
    "decide_create",
    "is_expired",
    "read_segments",
    "slice_records",
]

RecordData = bytes | memoryview  # a stored record: its bytes, or a view of a store's copy


@dataclass(frozen=True, slots=True)
class Segment:
    """Positions [start, end) of a stream's read that come from one stream's records."""

    stream_id: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ForkOrigin:
    """Where a fork branched: what it was created from, as requested."""

    source: str  # the source stream's name
    source_id: str  # the source incarnation that holds the reference
    anchor: int  # the resolved Stream-Fork-Offset
    sub_offset: int = 0  # Stream-Fork-Sub-Offset as requested (0 when absent)


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """Everything a stream is, except its data and its producers' states."""

    stream_id: str  # unique per incarnation of a path; part of every ETag
    content_type: str  # as the creator sent it
    media_type: str  # lower-cased type/subtype, what appends are compared on
    tail: int = 0  # position after the last stored byte
    ttl: int | None = None  # sliding expiry window, seconds
    expires_at: ExpiresAt | None = None
    closed: bool = False
    last_stream_seq: bytes | None = None
    touched_at: float = 0.0  # last read or write, for the sliding TTL
    base: int = 0  # where this stream's own records begin: its fork point
    inherited: tuple[Segment, ...] = ()  # ancestors' records covering [0, base)
    fork: ForkOrigin | None = None
    fork_count: int = 0  # live forks whose reads need this stream's records
    soft_deleted: bool = False  # deleted, but kept for its forks; answers 410

    @property
    def is_json(self) -> bool:
        return self.media_type == JSON_MEDIA_TYPE

    @property
    def tail_offset(self) -> str:
        return format_offset(self.tail)

    def deadline(self) -> float | None:
        """The wall-clock time at which the stream expires, if it does."""
        if self.soft_deleted:
            return None  # already gone for clients; kept only for its forks
        if self.expires_at is not None:
            return self.expires_at.timestamp
        if self.ttl is not None:
            return self.touched_at + self.ttl
        return None


def is_expired(meta: StreamMeta, now: float) -> bool:
    """Whether the stream's TTL or absolute expiry has passed at `now`."""
    deadline = meta.deadline()
    return deadline is not None and now >= deadline


def read_segments(meta: StreamMeta, position: int) -> list[Segment]:
    """Which streams' records a read from `position` draws on, in order.

    A plain stream reads only its own records; a fork reads its ancestors'
    records below its fork point, then its own.
    """
    own = Segment(meta.stream_id, meta.base, meta.tail)
    return [s for s in (*meta.inherited, own) if s.end > position and s.end > s.start]


def clip_records(
    records: Iterable[tuple[int, RecordData]], segment: Segment
) -> Iterator[tuple[int, RecordData]]:
    """`records` of one stream, cut to the positions `segment` covers."""
    for position, data in records:
        if position >= segment.end:
            return
        if position + len(data) > segment.end:
            data = data[: segment.end - position]
        yield position, data


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated PUT."""

    content_type: str
    media_type: str
    ttl: int | None = None
    expires_at: ExpiresAt | None = None
    closed: bool = False
    records: tuple[bytes, ...] = ()  # initial content, already framed

    def __post_init__(self) -> None:
        if self.ttl is not None and self.expires_at is not None:
            raise BadRequest("Stream-TTL and Stream-Expires-At cannot both be set")


@dataclass(frozen=True, slots=True)
class CreateDecision:
    """What a PUT does: `created` False means the stream already matched."""

    meta: StreamMeta
    created: bool
    records: tuple[bytes, ...] = ()


def decide_create(
    existing: StreamMeta | None, request: CreateRequest, *, now: float, new_id: str
) -> CreateDecision:
    """Create a stream, or confirm an identical existing one.

    `existing` must already exclude expired streams.

    Raises:
        ConfigMismatch: a stream exists with another content type, TTL,
            expiry or closure status.
    """
    if existing is not None:
        if existing.soft_deleted:
            raise ConfigMismatch("stream was deleted and is kept for its forks")
        if (
            existing.fork is not None
            or existing.media_type != request.media_type
            or existing.ttl != request.ttl
            or existing.expires_at != request.expires_at
            or existing.closed != request.closed
        ):
            raise ConfigMismatch("stream exists with a different configuration")
        return CreateDecision(existing, created=False)
    meta = StreamMeta(
        stream_id=new_id,
        content_type=request.content_type,
        media_type=request.media_type,
        tail=sum(len(record) for record in request.records),
        ttl=request.ttl,
        expires_at=request.expires_at,
        closed=request.closed,
        touched_at=now,
    )
    return CreateDecision(meta, created=True, records=request.records)


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """A validated POST. `records` is empty for a close-only request."""

    media_type: str | None
    records: tuple[bytes, ...] = ()
    close: bool = False
    producer: ProducerClaim | None = None
    stream_seq: bytes | None = None

    def __post_init__(self) -> None:
        if not self.records and not self.close:
            raise BadRequest("empty body: nothing to append")


@dataclass(frozen=True, slots=True)
class AppendOutcome:
    """How a POST is answered."""

    next_offset: str
    closed: bool
    changed: bool = False  # data was appended or the stream was closed
    appended: bool = False  # data was appended
    producer: ProducerState | None = None  # echoed in Producer-Epoch/-Seq


@dataclass(frozen=True, slots=True)
class AppendDecision:
    """What a POST does to the store: nothing, when `meta` is None."""

    outcome: AppendOutcome
    meta: StreamMeta | None = None
    records: tuple[bytes, ...] = ()
    producer_state: ProducerState | None = None  # to store under the claim's id
    start: int = 0  # position of the first new record
    offsets: tuple[int, ...] = field(default=())  # start position of each new record


def _closed_error(meta: StreamMeta) -> StreamClosed:
    return StreamClosed(
        "stream is closed",
        {"Stream-Closed": "true", "Stream-Next-Offset": meta.tail_offset},
    )


def decide_append(
    meta: StreamMeta,
    producer_state: ProducerState | None,
    request: AppendRequest,
    *,
    now: float,
) -> AppendDecision:
    """Decide an append, close, or append-and-close, in the spec's precedence.

    `producer_state` is the stored state of `request.producer`, if any.

    Raises:
        StreamClosed: the stream is closed and this is not a retry of an
            append it already holds, nor a repeated close.
        ContentTypeMismatch: the body's media type is not the stream's.
        StaleEpoch, InvalidEpochSeq, SeqGap: producer validation failed.
        SeqConflict: Stream-Seq does not increase.
    """
    claim = request.producer
    verdict: ProducerAccepted | ProducerDuplicate | None = None
    if meta.closed:
        if claim is not None:
            try:
                verdict = check_producer(producer_state, claim)
            except ProtocolError:
                verdict = None  # on a closed stream, "closed" outranks producer errors
            if isinstance(verdict, ProducerDuplicate):
                return AppendDecision(AppendOutcome(meta.tail_offset, True, producer=verdict.state))
        if request.close and not request.records:
            return AppendDecision(AppendOutcome(meta.tail_offset, True, producer=producer_state))
        raise _closed_error(meta)
    if request.records and request.media_type != meta.media_type:
        raise ContentTypeMismatch(
            f"content type does not match the stream's ({meta.media_type})"
        )
    new_state: ProducerState | None = None
    if claim is not None:
        verdict = check_producer(producer_state, claim)
        if isinstance(verdict, ProducerDuplicate):
            outcome = AppendOutcome(meta.tail_offset, False, producer=verdict.state)
            return AppendDecision(outcome)
        new_state = verdict.state
    if request.stream_seq is not None:
        if meta.last_stream_seq is not None and request.stream_seq <= meta.last_stream_seq:
            raise SeqConflict("Stream-Seq must be greater than the last one")
    positions: list[int] = []
    tail = meta.tail
    for record in request.records:
        positions.append(tail)
        tail += len(record)
    new_meta = replace(
        meta,
        tail=tail,
        closed=request.close,
        last_stream_seq=request.stream_seq or meta.last_stream_seq,
        touched_at=now,
    )
    outcome = AppendOutcome(
        new_meta.tail_offset,
        new_meta.closed,
        changed=True,
        appended=bool(request.records),
        producer=new_state,
    )
    return AppendDecision(
        outcome,
        meta=new_meta,
        records=request.records,
        producer_state=new_state,
        start=meta.tail,
        offsets=tuple(positions),
    )


@dataclass(frozen=True, slots=True)
class ReadSlice:
    """The records a read returns and where the next read starts."""

    pieces: tuple[bytes, ...]
    next_position: int


def slice_records(
    records: Iterable[tuple[int, RecordData]],
    start: int,
    max_bytes: int,
    *,
    whole_records: bool,
) -> ReadSlice:
    """Cut a read out of stored records.

    Only the bytes returned are copied out of `records` (which may be views
    into a store's pages, valid only while its read transaction is open).

    Args:
        records: `(position, data)` in position order, beginning with the record
            that contains `start` (earlier ones are skipped).
        start: the position the read begins at.
        max_bytes: the most data to return; at least one record's worth is
            returned when any exists, so a read always makes progress.
        whole_records: True for JSON streams, whose records are messages and
            are never split; a start inside a message begins at the next one.
    """
    pieces: list[bytes] = []
    size = 0
    position = start
    iterator: Iterator[tuple[int, RecordData]] = iter(records)
    for record_start, data in iterator:
        record_end = record_start + len(data)
        if record_end <= position:
            continue
        if whole_records:
            if record_start < position:
                continue
            if pieces and size + len(data) > max_bytes:
                break
            pieces.append(bytes(data))
            size += len(data)
            position = record_end
        else:
            begin = position - record_start
            room = max_bytes - size
            if room <= 0:
                break
            piece = bytes(data[begin : begin + room])
            pieces.append(piece)
            size += len(piece)
            position += len(piece)
        if size >= max_bytes:
            break
    return ReadSlice(tuple(pieces), position)
