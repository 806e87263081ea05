"""The storage interface every backend implements.

A store holds streams, their records and their producers' states. It applies
the pure decisions of `ds_trio.protocol.streams`; it never decides protocol
questions itself. It knows nothing of HTTP or of live readers: the caller
notifies watchers after a mutation returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..protocol.forks import ForkRequest
from ..protocol.streams import AppendOutcome, AppendRequest, CreateDecision, CreateRequest, StreamMeta

__all__ = ["ReadResult", "Store", "StoreStats"]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Sizes for metrics."""

    streams: int  # live and soft-deleted
    bytes: int  # stored record bytes (memory) or pages in use (LMDB)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A slice of a stream, with the stream's state when it was read."""

    meta: StreamMeta
    start: int  # the position the read began at (the tail for `now`)
    pieces: tuple[bytes, ...]  # raw bytes, or one JSON message each
    next_position: int

    @property
    def up_to_date(self) -> bool:
        """Whether the read reached the tail."""
        return self.next_position >= self.meta.tail

    @property
    def at_end(self) -> bool:
        """Whether the read reached the final offset of a closed stream."""
        return self.meta.closed and self.up_to_date


class Store(Protocol):
    """Durable Streams storage. `now` is Unix time in seconds throughout."""

    async def create(self, name: str, request: CreateRequest, now: float) -> CreateDecision:
        """Create a stream or confirm an identical one.

        Raises:
            ConfigMismatch: it exists with another configuration.
            StorageFull: no room to store it.
        """
        ...

    async def fork(self, name: str, request: ForkRequest, now: float) -> CreateDecision:
        """Create a fork of `request.source`, or confirm an identical one.

        Raises:
            StreamNotFound: the source does not exist.
            ConfigMismatch: the path holds another stream, or the source is soft-deleted.
            ContentTypeMismatch: the fork's content type is not the source's.
            BadRequest: the fork offset or sub-offset lies past the source's data.
        """
        ...

    async def append(self, name: str, request: AppendRequest, now: float) -> AppendOutcome:
        """Append, close, or both, atomically with the producer state.

        Raises:
            StreamNotFound, StreamGone, StreamClosed, ContentTypeMismatch, SeqConflict,
            StaleEpoch, InvalidEpochSeq, SeqGap, StorageFull.
        """
        ...

    async def read(self, name: str, start: int | None, max_bytes: int, now: float) -> ReadResult:
        """Read from `start` (None: the tail) and extend a sliding TTL.

        Raises:
            StreamNotFound: no such stream, or it expired.
            StreamGone: it was deleted but is kept for its forks.
            InvalidOffset: `start` is past the tail.
        """
        ...

    async def head(self, name: str, now: float) -> StreamMeta:
        """The stream's metadata, without extending its TTL.

        Raises:
            StreamNotFound: no such stream, or it expired.
            StreamGone: it was deleted but is kept for its forks.
        """
        ...

    async def delete(self, name: str, now: float) -> None:
        """Remove the stream and its data; one that has forks is only soft-deleted.

        Raises:
            StreamNotFound: no such stream, or it expired.
            StreamGone: it is already soft-deleted.
        """
        ...

    async def expire(self, now: float) -> list[str]:
        """End every stream whose expiry has passed; return their names.

        A stream with forks is soft-deleted instead, so its forks still read it.
        """
        ...

    async def stats(self) -> StoreStats:
        """How much the store holds."""
        ...

    async def stream_names(self, now: float) -> list[str]:
        """The names of every live (not expired, not soft-deleted) stream."""
        ...

    async def load_subscriptions(self) -> dict[str, bytes]:
        """Every saved subscription record, by id."""
        ...

    async def save_subscription(self, sub_id: str, record: bytes | None) -> None:
        """Save a subscription record (None deletes it) in one commit.

        Saves are applied in the order they were called: the write is queued
        before the call's first checkpoint.

        Raises:
            StorageFailure, StorageFull: nothing was saved.
        """
        ...

    async def check_writable(self) -> None:
        """Prove a write can commit now (for readiness probes).

        Raises:
            StorageFailure, StorageFull: it cannot.
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources."""
        ...
