"""The in-memory store: the zero-configuration default.

Everything runs on the event loop thread and no method awaits between reading
and writing state, so each operation is atomic without locks.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ..protocol.errors import InvalidOffset, StreamGone, StreamNotFound
from ..protocol.forks import (
    DeleteAction,
    ForkRequest,
    decide_delete,
    decide_fork,
    expire_action,
    release_fork,
)
from ..protocol.paths import check_stream_quota
from ..protocol.producers import ProducerState
from ..protocol.streams import (
    AppendOutcome,
    AppendRequest,
    CreateDecision,
    CreateRequest,
    StreamMeta,
    clip_records,
    decide_append,
    decide_create,
    is_expired,
    read_segments,
    slice_records,
)
from .base import ReadResult, StoreStats

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Stream:
    name: str
    meta: StreamMeta
    positions: list[int] = field(default_factory=list)  # start of each own record
    records: list[bytes] = field(default_factory=list)
    producers: dict[str, ProducerState] = field(default_factory=dict)

    def add(self, start: int, records: tuple[bytes, ...]) -> None:
        for record in records:
            self.positions.append(start)
            self.records.append(record)
            start += len(record)

    def records_from(self, position: int) -> Iterator[tuple[int, bytes]]:
        first = max(0, bisect_right(self.positions, position) - 1)
        positions, data = self.positions, self.records
        return ((positions[i], data[i]) for i in range(first, len(data)))


class MemoryStore:
    """Streams held in process memory; lost when the process exits."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}  # live and soft-deleted, by name
        self._by_id: dict[str, _Stream] = {}  # the same, by stream id
        self._deadlines: list[tuple[float, str, str]] = []  # (deadline, name, stream_id)
        self._bytes = 0  # record bytes held, for stats
        self._subscriptions: dict[str, bytes] = {}
        self.stream_quota = 0  # streams per quota prefix; 0: no limit

    def __len__(self) -> int:
        return len(self._streams)

    # -- internals --------------------------------------------------------------------

    def _schedule(self, stream: _Stream) -> None:
        deadline = stream.meta.deadline()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, stream.name, stream.meta.stream_id))

    def _add(self, name: str, decision: CreateDecision) -> None:
        stream = _Stream(name, decision.meta)
        stream.add(decision.meta.base, decision.records)
        self._bytes += decision.meta.tail - decision.meta.base
        self._streams[name] = stream
        self._by_id[decision.meta.stream_id] = stream
        self._schedule(stream)

    def _remove(self, stream: _Stream) -> None:
        """Remove `stream`, then release its hold on its source, up the chain."""
        while True:
            del self._streams[stream.name]
            del self._by_id[stream.meta.stream_id]
            self._bytes -= stream.meta.tail - stream.meta.base
            origin = stream.meta.fork
            source = self._by_id.get(origin.source_id) if origin else None
            if source is None:
                return
            source.meta, remove = release_fork(source.meta)
            if not remove:
                return
            stream = source

    def _end(self, stream: _Stream, action: str) -> None:
        if action == DeleteAction.SOFT:
            stream.meta = replace(stream.meta, soft_deleted=True)
        else:
            self._remove(stream)

    def _check_quota(self, name: str) -> None:
        if self.stream_quota and name not in self._streams:
            check_stream_quota(name, self.stream_quota, self._count_under)

    def _count_under(self, prefix: str, limit: int) -> int:
        return sum(1 for other in self._streams if other.startswith(prefix))

    def _find(self, name: str, now: float) -> _Stream | None:
        """The stream at `name`, after applying its expiry if that has passed."""
        stream = self._streams.get(name)
        if stream is not None and not stream.meta.soft_deleted and is_expired(stream.meta, now):
            self._end(stream, expire_action(stream.meta))
            stream = self._streams.get(name)
        return stream

    def _live(self, name: str, now: float) -> _Stream:
        stream = self._find(name, now)
        if stream is None:
            raise StreamNotFound("stream not found")
        if stream.meta.soft_deleted:
            raise StreamGone("stream was deleted")
        return stream

    def _records(self, meta: StreamMeta, position: int) -> Iterator[tuple[int, bytes]]:
        """Records a read from `position` sees, across inherited segments."""
        parts = []
        for segment in read_segments(meta, position):
            owner = self._by_id[segment.stream_id]
            parts.append(clip_records(owner.records_from(max(position, segment.start)), segment))
        return itertools.chain.from_iterable(parts)

    def _touch(self, stream: _Stream, now: float) -> StreamMeta:
        if stream.meta.ttl is not None:
            stream.meta = replace(stream.meta, touched_at=now)
        return stream.meta

    # -- the Store interface ----------------------------------------------------------

    async def create(self, name: str, request: CreateRequest, now: float) -> CreateDecision:
        existing = self._find(name, now)
        meta = existing.meta if existing else None
        decision = decide_create(meta, request, now=now, new_id=secrets.token_hex(8))
        if decision.created:
            self._check_quota(name)
            self._add(name, decision)
        return decision

    async def fork(self, name: str, request: ForkRequest, now: float) -> CreateDecision:
        existing = self._find(name, now)
        source = self._find(request.source, now) if existing is None else None
        decision = decide_fork(
            existing.meta if existing else None,
            source.meta if source else None,
            request,
            records=self._records,
            now=now,
            new_id=secrets.token_hex(8),
        )
        if source is not None and decision.source is not None:
            self._check_quota(name)
            source.meta = decision.source
            self._add(name, decision.created)
        return decision.created

    async def append(self, name: str, request: AppendRequest, now: float) -> AppendOutcome:
        stream = self._live(name, now)
        claim = request.producer
        state = stream.producers.get(claim.producer_id) if claim else None
        decision = decide_append(stream.meta, state, request, now=now)
        if decision.meta is not None:
            stream.add(decision.start, decision.records)
            self._bytes += decision.meta.tail - decision.start
            stream.meta = decision.meta
            if claim is not None and decision.producer_state is not None:
                stream.producers[claim.producer_id] = decision.producer_state
        else:
            self._touch(stream, now)
        return decision.outcome

    async def read(self, name: str, start: int | None, max_bytes: int, now: float) -> ReadResult:
        stream = self._live(name, now)
        meta = self._touch(stream, now)
        position = meta.tail if start is None else start
        if position > meta.tail:
            raise InvalidOffset("offset is beyond the tail of the stream")
        piece = slice_records(
            self._records(meta, position), position, max_bytes, whole_records=meta.is_json
        )
        return ReadResult(meta, position, piece.pieces, piece.next_position)

    async def head(self, name: str, now: float) -> StreamMeta:
        return self._live(name, now).meta

    async def delete(self, name: str, now: float) -> None:
        stream = self._find(name, now)
        if stream is None:
            raise StreamNotFound("stream not found")
        self._end(stream, decide_delete(stream.meta))

    async def expire(self, now: float) -> list[str]:
        expired: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, name, stream_id = heapq.heappop(self._deadlines)
            stream = self._by_id.get(stream_id)
            if stream is None or stream.meta.soft_deleted:
                continue  # gone, or already kept only for its forks
            if is_expired(stream.meta, now):
                self._end(stream, expire_action(stream.meta))
                expired.append(name)
            else:
                self._schedule(stream)  # a read or write slid its TTL
        return expired

    async def stats(self) -> StoreStats:
        return StoreStats(len(self._streams), self._bytes)

    async def stream_names(self, now: float) -> list[str]:
        return [name for name in list(self._streams) if (s := self._find(name, now)) and not s.meta.soft_deleted]

    async def load_subscriptions(self) -> dict[str, bytes]:
        return dict(self._subscriptions)

    async def save_subscription(self, sub_id: str, record: bytes | None) -> None:
        if record is None:
            self._subscriptions.pop(sub_id, None)
        else:
            self._subscriptions[sub_id] = record

    async def check_writable(self) -> None:
        return None  # memory is always writable

    async def aclose(self) -> None:
        self._streams.clear()
        self._by_id.clear()
        self._deadlines.clear()
