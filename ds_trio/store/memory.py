"""The in-memory store: the zero-configuration default.

Everything runs on the event loop thread and no method awaits between reading
and writing state, so each operation is atomic without locks.
"""

from __future__ import annotations

import heapq
import secrets
from bisect import bisect_right
from dataclasses import dataclass, field, replace

from ..protocol.errors import InvalidOffset, StreamNotFound
from ..protocol.producers import ProducerState
from ..protocol.streams import (
    AppendOutcome,
    AppendRequest,
    CreateDecision,
    CreateRequest,
    StreamMeta,
    decide_append,
    decide_create,
    is_expired,
    slice_records,
)
from .base import ReadResult

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Stream:
    meta: StreamMeta
    positions: list[int] = field(default_factory=list)  # start of each record
    records: list[bytes] = field(default_factory=list)
    producers: dict[str, ProducerState] = field(default_factory=dict)

    def add(self, start: int, records: tuple[bytes, ...]) -> None:
        for record in records:
            self.positions.append(start)
            self.records.append(record)
            start += len(record)


class MemoryStore:
    """Streams held in process memory; lost when the process exits."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._deadlines: list[tuple[float, str, str]] = []  # (deadline, name, stream_id)

    def __len__(self) -> int:
        return len(self._streams)

    def _live(self, name: str, now: float) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            raise StreamNotFound("stream not found")
        if is_expired(stream.meta, now):
            del self._streams[name]
            raise StreamNotFound("stream not found")
        return stream

    def _schedule(self, name: str, meta: StreamMeta) -> None:
        deadline = meta.deadline()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, name, meta.stream_id))

    async def create(self, name: str, request: CreateRequest, now: float) -> CreateDecision:
        try:
            existing: StreamMeta | None = self._live(name, now).meta
        except StreamNotFound:
            existing = None
        decision = decide_create(existing, request, now=now, new_id=secrets.token_hex(8))
        if decision.created:
            stream = _Stream(decision.meta)
            stream.add(0, decision.records)
            self._streams[name] = stream
            self._schedule(name, decision.meta)
        return decision

    async def append(self, name: str, request: AppendRequest, now: float) -> AppendOutcome:
        stream = self._live(name, now)
        claim = request.producer
        state = stream.producers.get(claim.producer_id) if claim else None
        decision = decide_append(stream.meta, state, request, now=now)
        if decision.meta is not None:
            stream.add(decision.start, decision.records)
            stream.meta = decision.meta
            if claim is not None and decision.producer_state is not None:
                stream.producers[claim.producer_id] = decision.producer_state
        elif stream.meta.ttl is not None:
            stream.meta = replace(stream.meta, touched_at=now)
        return decision.outcome

    async def read(self, name: str, start: int | None, max_bytes: int, now: float) -> ReadResult:
        stream = self._live(name, now)
        meta = stream.meta
        if meta.ttl is not None:
            meta = stream.meta = replace(meta, touched_at=now)
        position = meta.tail if start is None else start
        if position > meta.tail:
            raise InvalidOffset("offset is beyond the tail of the stream")
        first = max(0, bisect_right(stream.positions, position) - 1)
        positions, data = stream.positions, stream.records
        records = ((positions[i], data[i]) for i in range(first, len(data)))
        piece = slice_records(records, position, max_bytes, whole_records=meta.is_json)
        return ReadResult(meta, position, piece.pieces, piece.next_position)

    async def head(self, name: str, now: float) -> StreamMeta:
        return self._live(name, now).meta

    async def delete(self, name: str, now: float) -> None:
        self._live(name, now)
        del self._streams[name]

    async def expire(self, now: float) -> list[str]:
        expired: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, name, stream_id = heapq.heappop(self._deadlines)
            stream = self._streams.get(name)
            if stream is None or stream.meta.stream_id != stream_id:
                continue  # deleted or re-created since it was scheduled
            if is_expired(stream.meta, now):
                del self._streams[name]
                expired.append(name)
            else:
                self._schedule(name, stream.meta)  # a read or write slid its TTL
        return expired

    async def aclose(self) -> None:
        self._streams.clear()
        self._deadlines.clear()
