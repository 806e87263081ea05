"""The LMDB store: durable, atomic, crash-safe, and never on the event loop.

Rules:
- Every LMDB call runs in a worker thread via `trio.to_thread.run_sync` under
  one `trio.CapacityLimiter`; the event loop thread never touches LMDB.
- Every change to a stream (its records, its metadata, its producers' states,
  its expiry entry) is decided and written inside one write transaction, by the
  same pure decision functions the memory store uses. Offsets, Stream-Seq and
  producer checks are made from what the transaction reads, never from process
  memory, so several processes may share one data directory.
- Writes are group-committed: while one transaction commits, later writes
  queue; the next transaction applies them all. Each request is answered only
  after the transaction holding it is committed (and, by default, synced).
- The map grows by itself: a full map aborts the transaction, the map is
  doubled while no transaction of this process is open, and the batch re-runs.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import lmdb
import trio

from ..protocol.errors import (
    InvalidOffset,
    ProtocolError,
    StorageFailure,
    StorageFull,
    StreamGone,
    StreamNotFound,
)
from ..protocol.forks import (
    DeleteAction,
    ForkRequest,
    decide_delete,
    decide_fork,
    expire_action,
    release_fork,
)
from ..protocol.streams import (
    AppendOutcome,
    AppendRequest,
    CreateDecision,
    CreateRequest,
    RecordData,
    StreamMeta,
    clip_records,
    decide_append,
    decide_create,
    is_expired,
    read_segments,
    slice_records,
)
from ..protocol.paths import check_stream_quota
from . import lmdb_keys as keys
from .base import ReadResult, StoreStats
from .lmdb_env import ResizeGate, StoreOpenError, open_env, release_env

__all__ = ["FaultHook", "LmdbStore", "StorageFailure", "StoreOpenError"]

log = logging.getLogger("ds_trio.store.lmdb")

T = TypeVar("T")
FaultHook = Callable[[str], None]  # called with "before_commit", "during_commit", "after_commit"

PIECE_BYTES: Final = 1024 * 1024  # byte-stream appends are stored in pieces of at most 1 MiB
EXPIRE_BATCH: Final = 1000  # streams removed per sweep transaction at most
@dataclass(eq=False)
class _Op:
    """One write waiting for a group commit."""

    apply: Callable[[lmdb.Transaction], Any]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class LmdbStore:
    """Streams in an LMDB environment in one directory. Open with `LmdbStore.open`."""

    def __init__(
        self,
        env: lmdb.Environment,
        dbs: dict[bytes, Any],
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._env = env
        self._info = dbs[b"info"]
        self._streams = dbs[b"streams"]
        self._data = dbs[b"data"]
        self._producers = dbs[b"producers"]
        self._expiry = dbs[b"expiry"]
        self._subscriptions = dbs[b"subscriptions"]
        self._limiter = limiter
        self._gate = ResizeGate()
        self._pending: list[_Op] = []
        self._committing = False
        self._loop_thread = threading.get_ident()
        self._lock_fd: int | None = None
        self.fault_hook: FaultHook | None = None  # test-only fault injection
        self.commit_observer: Callable[[float], None] | None = None  # seconds per commit
        self.commits = 0  # write transactions committed, for statistics
        self.stream_quota = 0  # streams per quota prefix; 0: no limit

    @classmethod
    async def open(
        cls, path: str | Path, *, map_size: int = 1 << 30, sync: bool = True, threads: int = 8
    ) -> LmdbStore:
        """Open (or create) the store in `path`.

        Raises:
            StoreOpenError: the directory is not empty and not a ds_trio store,
                or its layout version is not this one's (it is left untouched);
                or another ds_trio server holds it.
        """
        limiter = trio.CapacityLimiter(threads)
        env, dbs, lock_fd = await trio.to_thread.run_sync(
            partial(open_env, Path(path), map_size, sync), limiter=limiter
        )
        store = cls(env, dbs, limiter)
        store._lock_fd = lock_fd
        return store

    # -- plumbing ---------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    def _assert_worker_thread(self) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("LMDB called on the event loop thread")

    @contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        self._assert_worker_thread()
        for _ in range(3):
            with self._gate.shared():
                try:
                    txn = self._env.begin(buffers=True)
                except lmdb.MapResizedError:
                    pass
                else:
                    try:
                        yield txn
                    finally:
                        txn.abort()
                    return
            self._adopt_resize()
        raise StorageFailure("the LMDB map keeps being resized by another process")

    def _adopt_resize(self) -> None:
        with self._gate.exclusive():
            self._env.set_mapsize(0)  # another process grew the map: adopt its size

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self._env.info()["map_size"]
            log.info("LMDB map full at %d MiB; growing to %d MiB", size >> 20, size >> 19)
            self._env.set_mapsize(size * 2)

    def _fault(self, step: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(step)

    def _commit_batch(self, batch: list[_Op]) -> None:
        """Apply `batch` in one write transaction (worker thread)."""
        self._assert_worker_thread()
        while True:
            for op in batch:
                op.result = op.error = None
            try:
                self._fault("before_commit")
                started = time.perf_counter()
                with self._gate.shared(), self._env.begin(write=True) as txn:
                    for op in batch:
                        try:
                            op.result = op.apply(txn)
                        except ProtocolError as exc:
                            op.error = exc
                    self._fault("during_commit")
                self.commits += 1
                if self.commit_observer is not None:
                    self.commit_observer(time.perf_counter() - started)
                self._fault("after_commit")
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_resize()
            except lmdb.Error as exc:
                log.error("LMDB write failed: %s", exc)
                failure: ProtocolError = (
                    StorageFull("no storage space left") if _is_no_space(exc) else
                    StorageFailure("storage failure; nothing was written")
                )
                for op in batch:
                    op.error = failure
                return
            except Exception as exc:
                log.error("write transaction failed: %r", exc)
                for op in batch:
                    op.error = StorageFailure("storage failure; the outcome is unknown")
                return

    async def _write(self, apply: Callable[[lmdb.Transaction], T]) -> T:
        """Run `apply` inside a group-committed write transaction."""
        op = _Op(apply)
        self._pending.append(op)
        if self._committing:
            await op.done.wait()  # the committing task applies it
        else:
            self._committing = True
            try:
                # Shielded: the batch holds other requests' writes too.
                with trio.CancelScope(shield=True):
                    while self._pending:
                        batch, self._pending = self._pending, []
                        try:
                            await self._in_thread(partial(self._commit_batch, batch))
                        finally:
                            for queued in batch:
                                queued.done.set()
            finally:
                self._committing = False
        if op.error is not None:
            raise op.error
        return op.result

    # -- transaction bodies (worker thread) -------------------------------------------

    def _load(self, txn: lmdb.Transaction, name: bytes) -> StreamMeta | None:
        value = txn.get(keys.stream_key(name), db=self._streams)
        return None if value is None else keys.decode_meta(value)

    def _live_meta(self, txn: lmdb.Transaction, name: bytes, now: float) -> StreamMeta:
        """The stream at `name` for a read-only request (expiry is only judged)."""
        meta = self._load(txn, name)
        if meta is None:
            raise StreamNotFound("stream not found")
        if meta.soft_deleted or (is_expired(meta, now) and meta.fork_count > 0):
            raise StreamGone("stream was deleted")
        if is_expired(meta, now):
            raise StreamNotFound("stream not found")
        return meta

    def _find(self, txn: lmdb.Transaction, name: bytes, now: float) -> StreamMeta | None:
        """The stream at `name` in a write, after applying its expiry if due."""
        meta = self._load(txn, name)
        if meta is not None and is_expired(meta, now):
            self._end(txn, name, meta, expire_action(meta))
            meta = self._load(txn, name)
        return meta

    def _writable(self, txn: lmdb.Transaction, name: bytes, now: float) -> StreamMeta:
        meta = self._find(txn, name, now)
        if meta is None:
            raise StreamNotFound("stream not found")
        if meta.soft_deleted:
            raise StreamGone("stream was deleted")
        return meta

    def _put_meta(
        self, txn: lmdb.Transaction, name: bytes, meta: StreamMeta, old: StreamMeta | None
    ) -> None:
        txn.put(keys.stream_key(name), keys.encode_meta(meta, name), db=self._streams)
        old_deadline = old.deadline() if old is not None else None
        new_deadline = meta.deadline()
        if old is not None and old_deadline is not None and old_deadline != new_deadline:
            txn.delete(keys.expiry_key(old_deadline, old.stream_id), db=self._expiry)
        if new_deadline is not None and new_deadline != old_deadline:
            txn.put(keys.expiry_key(new_deadline, meta.stream_id), name, db=self._expiry)

    def _put_records(
        self, txn: lmdb.Transaction, meta: StreamMeta, start: int, records: tuple[bytes, ...]
    ) -> None:
        position = start
        for record in records:
            if meta.is_json:
                pieces = [record]
            else:
                pieces = [record[i : i + PIECE_BYTES] for i in range(0, len(record), PIECE_BYTES)]
            for piece in pieces:
                txn.put(keys.data_key(meta.stream_id, position), piece, db=self._data)
                position += len(piece)

    def _delete_prefix(self, txn: lmdb.Transaction, db: Any, prefix: bytes) -> None:
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        while bytes(cursor.key()).startswith(prefix):
            if not cursor.delete():
                break

    def _remove(self, txn: lmdb.Transaction, name: bytes, meta: StreamMeta) -> None:
        """Remove a stream, then release its hold on its source, up the chain."""
        while True:
            txn.delete(keys.stream_key(name), db=self._streams)
            prefix = keys.stream_prefix(meta.stream_id)
            self._delete_prefix(txn, self._data, prefix)
            self._delete_prefix(txn, self._producers, prefix)
            deadline = meta.deadline()
            if deadline is not None:
                txn.delete(keys.expiry_key(deadline, meta.stream_id), db=self._expiry)
            origin = meta.fork
            if origin is None:
                return
            source_name = origin.source.encode("utf-8")
            source = self._load(txn, source_name)
            if source is None or source.stream_id != origin.source_id:
                return
            released, remove = release_fork(source)
            if not remove:
                self._put_meta(txn, source_name, released, source)
                return
            name, meta = source_name, released

    def _end(self, txn: lmdb.Transaction, name: bytes, meta: StreamMeta, action: str) -> None:
        if action == DeleteAction.SOFT:
            self._put_meta(txn, name, replace(meta, soft_deleted=True), meta)
        else:
            self._remove(txn, name, meta)

    def _records(
        self, txn: lmdb.Transaction, meta: StreamMeta, position: int
    ) -> Iterator[tuple[int, RecordData]]:
        """Records a read from `position` sees, across inherited segments (views into `txn`)."""
        parts = [
            clip_records(self._records_from(txn, seg.stream_id, max(position, seg.start)), seg)
            for seg in read_segments(meta, position)
        ]
        return itertools.chain.from_iterable(parts)

    def _create_in(
        self, txn: lmdb.Transaction, name: bytes, request: CreateRequest, now: float
    ) -> CreateDecision:
        existing = self._find(txn, name, now)
        decision = decide_create(existing, request, now=now, new_id=secrets.token_hex(8))
        if decision.created:
            self._check_quota(txn, name)
            self._put_records(txn, decision.meta, 0, decision.records)
            self._put_meta(txn, name, decision.meta, None)
        return decision

    def _check_quota(self, txn: lmdb.Transaction, name: bytes) -> None:
        """Decided in the write transaction, so workers sharing the store agree."""
        if not self.stream_quota or txn.get(keys.stream_key(name), db=self._streams) is not None:
            return

        def count_under(prefix: str, limit: int) -> int:
            encoded = prefix.encode("utf-8")
            cursor = txn.cursor(db=self._streams)
            count = 0
            if cursor.set_range(encoded):
                for key in cursor.iternext(keys=True, values=False):
                    if not bytes(key).startswith(encoded) or count >= limit:
                        break
                    count += 1
            return count

        check_stream_quota(name.decode("utf-8"), self.stream_quota, count_under)

    def _fork_in(
        self, txn: lmdb.Transaction, name: bytes, request: ForkRequest, now: float
    ) -> CreateDecision:
        existing = self._find(txn, name, now)
        source_name = request.source.encode("utf-8")
        source = self._find(txn, source_name, now) if existing is None else None
        decision = decide_fork(
            existing,
            source,
            request,
            records=partial(self._records, txn),
            now=now,
            new_id=secrets.token_hex(8),
        )
        created = decision.created
        if source is not None and decision.source is not None:
            self._check_quota(txn, name)
            self._put_meta(txn, source_name, decision.source, source)
            self._put_records(txn, created.meta, created.meta.base, created.records)
            self._put_meta(txn, name, created.meta, None)
        return created

    def _append_in(
        self, txn: lmdb.Transaction, name: bytes, request: AppendRequest, now: float
    ) -> AppendOutcome:
        meta = self._writable(txn, name, now)
        claim = request.producer
        producer_key = keys.producer_key(meta.stream_id, claim.producer_id) if claim else None
        state = None
        if producer_key is not None:
            stored = txn.get(producer_key, db=self._producers)
            state = keys.decode_producer(stored) if stored is not None else None
        decision = decide_append(meta, state, request, now=now)
        if decision.meta is not None:
            self._put_records(txn, decision.meta, decision.start, decision.records)
            self._put_meta(txn, name, decision.meta, meta)
            if producer_key is not None and decision.producer_state is not None:
                txn.put(producer_key, keys.encode_producer(decision.producer_state), db=self._producers)
        elif meta.ttl is not None:
            self._put_meta(txn, name, replace(meta, touched_at=now), meta)
        return decision.outcome

    def _touch_in(self, txn: lmdb.Transaction, name: bytes, stream_id: str, now: float) -> None:
        meta = self._load(txn, name)
        if meta is not None and meta.stream_id == stream_id and meta.touched_at < now:
            if not meta.soft_deleted and not is_expired(meta, now):
                self._put_meta(txn, name, replace(meta, touched_at=now), meta)

    def _delete_in(self, txn: lmdb.Transaction, name: bytes, now: float) -> None:
        meta = self._find(txn, name, now)
        if meta is None:
            raise StreamNotFound("stream not found")
        self._end(txn, name, meta, decide_delete(meta))

    def _expire_in(self, txn: lmdb.Transaction, now: float) -> list[str]:
        due: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=self._expiry)
        if cursor.first():
            for key, value in cursor:
                key = bytes(key)
                if keys.expiry_deadline(key) > now or len(due) >= EXPIRE_BATCH:
                    break
                due.append((key, bytes(value)))
        expired: list[str] = []
        for key, name in due:
            meta = self._load(txn, name)
            if meta is None or keys.stream_prefix(meta.stream_id) != key[8:]:
                txn.delete(key, db=self._expiry)  # the stream is gone or re-created
            elif is_expired(meta, now):
                self._end(txn, name, meta, expire_action(meta))
                expired.append(name.decode("utf-8"))
        return expired

    def _read_in(self, name: bytes, start: int | None, max_bytes: int, now: float) -> ReadResult:
        with self._reading() as txn:
            meta = self._live_meta(txn, name, now)
            position = meta.tail if start is None else start
            if position > meta.tail:
                raise InvalidOffset("offset is beyond the tail of the stream")
            records = self._records(txn, meta, position)
            piece = slice_records(records, position, max_bytes, whole_records=meta.is_json)
            return ReadResult(meta, position, piece.pieces, piece.next_position)

    def _records_from(
        self, txn: lmdb.Transaction, stream_id: str, position: int
    ) -> Iterator[tuple[int, RecordData]]:
        """The stream's records, starting with the one that holds `position` (views into `txn`)."""
        prefix = keys.stream_prefix(stream_id)
        target = keys.data_key(stream_id, position)
        cursor = txn.cursor(db=self._data)
        found = cursor.set_range(target)
        if not found or bytes(cursor.key()) != target:
            stepped = cursor.prev() if found else cursor.last()
            if not stepped or not bytes(cursor.key()).startswith(prefix):
                if not cursor.set_range(target):
                    return
        while True:
            key = bytes(cursor.key())
            if not key.startswith(prefix):
                return
            yield keys.position_of(key), cursor.value()
            if not cursor.next():
                return

    def _head_in(self, name: bytes, now: float) -> StreamMeta:
        with self._reading() as txn:
            return self._live_meta(txn, name, now)

    def _stats_in(self) -> StoreStats:
        with self._reading() as txn:
            streams = txn.stat(self._streams)["entries"]
        info, stat = self._env.info(), self._env.stat()
        return StoreStats(streams, (info["last_pgno"] + 1) * stat["psize"])

    def _names_in(self, now: float) -> list[str]:
        with self._reading() as txn:
            entries = [
                (keys.stream_name(bytes(key), value), keys.decode_meta(value))
                for key, value in txn.cursor(db=self._streams).iternext()
            ]
        return [n for n, m in entries if not m.soft_deleted and not is_expired(m, now)]

    def _load_subs_in(self) -> dict[str, bytes]:
        with self._reading() as txn:
            cursor = txn.cursor(db=self._subscriptions)
            return {bytes(k).decode(): bytes(v) for k, v in cursor.iternext()}

    def _save_sub_in(self, txn: lmdb.Transaction, key: bytes, record: bytes | None) -> None:
        if record is None:
            txn.delete(key, db=self._subscriptions)
        else:
            txn.put(key, record, db=self._subscriptions)

    def _probe_in(self, txn: lmdb.Transaction) -> None:
        txn.put(b"probe", b"ok", db=self._info)

    # -- the Store interface ----------------------------------------------------------

    async def create(self, name: str, request: CreateRequest, now: float) -> CreateDecision:
        return await self._write(partial(self._create_in, name=name.encode(), request=request, now=now))

    async def fork(self, name: str, request: ForkRequest, now: float) -> CreateDecision:
        return await self._write(partial(self._fork_in, name=name.encode(), request=request, now=now))

    async def append(self, name: str, request: AppendRequest, now: float) -> AppendOutcome:
        return await self._write(partial(self._append_in, name=name.encode(), request=request, now=now))

    async def read(self, name: str, start: int | None, max_bytes: int, now: float) -> ReadResult:
        encoded = name.encode()
        result = await self._in_thread(partial(self._read_in, encoded, start, max_bytes, now))
        if result.meta.ttl is not None:
            meta = result.meta
            await self._write(partial(self._touch_in, name=encoded, stream_id=meta.stream_id, now=now))
            result = replace(result, meta=replace(meta, touched_at=now))
        return result

    async def head(self, name: str, now: float) -> StreamMeta:
        return await self._in_thread(partial(self._head_in, name.encode(), now))

    async def delete(self, name: str, now: float) -> None:
        await self._write(partial(self._delete_in, name=name.encode(), now=now))

    async def expire(self, now: float) -> list[str]:
        return await self._write(partial(self._expire_in, now=now))

    async def stats(self) -> StoreStats:
        return await self._in_thread(self._stats_in)

    async def stream_names(self, now: float) -> list[str]:
        return await self._in_thread(partial(self._names_in, now))

    async def load_subscriptions(self) -> dict[str, bytes]:
        return await self._in_thread(self._load_subs_in)

    async def save_subscription(self, sub_id: str, record: bytes | None) -> None:
        await self._write(partial(self._save_sub_in, key=sub_id.encode(), record=record))

    async def check_writable(self) -> None:
        await self._write(self._probe_in)

    async def aclose(self) -> None:
        await self._in_thread(self._env.close)
        if self._lock_fd is not None:
            release_env(self._lock_fd)  # releases the owner lock
            self._lock_fd = None


def _is_no_space(exc: lmdb.Error) -> bool:
    text = str(exc).lower()
    return "no space" in text or "enospc" in text or isinstance(exc, lmdb.DiskError)
