"""What only the LMDB store promises: persistence, growth, refusal of foreign
data dirs, worker-thread-only access, group commit, and consistency under
injected faults, torn-read attempts and large commits."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio

from ds_trio.protocol.errors import StorageFull, StreamClosed
from ds_trio.protocol.headers import parse_expires_at
from ds_trio.protocol.producers import ProducerClaim
from ds_trio.protocol.streams import AppendRequest, CreateRequest
from ds_trio.store.lmdb import LmdbStore, StorageFailure, StoreOpenError

from .test_contract import NOW, TEXT, read_all, text

BINARY = CreateRequest("application/octet-stream", "application/octet-stream")


def binary(data: bytes, **options: Any) -> AppendRequest:
    return AppendRequest("application/octet-stream", (data,), **options)


async def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    expires = parse_expires_at("2031-05-06T07:08:09.5+02:00")
    store = await LmdbStore.open(tmp_path)
    await store.create("a", CreateRequest("text/plain; charset=utf-8", "text/plain", ttl=600), NOW)
    await store.append("a", text(b"one", producer=ProducerClaim("p", 2, 0), stream_seq=b"s1"), NOW)
    await store.create("b", CreateRequest("text/plain", "text/plain", expires_at=expires), NOW)
    await store.append("b", text(b"final", close=True), NOW)
    before = (await store.head("a", NOW), await store.head("b", NOW))
    await store.aclose()

    store = await LmdbStore.open(tmp_path)
    try:
        after = (await store.head("a", NOW), await store.head("b", NOW))
        assert after == before
        assert after[0].content_type == "text/plain; charset=utf-8" and after[0].ttl == 600
        assert after[1].closed and after[1].expires_at == expires
        duplicate = await store.append("a", text(b"one", producer=ProducerClaim("p", 2, 0)), NOW)
        assert not duplicate.appended  # producer state came back
        next_one = await store.append("a", text(b"two", producer=ProducerClaim("p", 2, 1), stream_seq=b"s2"), NOW)
        assert next_one.next_offset > before[0].tail_offset
        with pytest.raises(StreamClosed):
            await store.append("b", text(b"more"), NOW)
        assert await read_all(store, "a") == b"onetwo"
    finally:
        await store.aclose()


async def test_map_grows_when_full(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path, map_size=256 * 1024)
    try:
        await store.create("s", BINARY, NOW)
        chunk = os.urandom(512 * 1024)
        for _ in range(8):
            await store.append("s", binary(chunk), NOW)
        assert await read_all(store, "s") == chunk * 8
        assert store._env.info()["map_size"] > 4 * 1024 * 1024
    finally:
        await store.aclose()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


async def test_a_directory_that_is_not_ours_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    with pytest.raises(StoreOpenError, match="not a ds_trio data directory"):
        await LmdbStore.open(tmp_path)
    assert _snapshot(tmp_path) == before


async def test_a_foreign_lmdb_database_is_refused_untouched(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"their", b"data")
    env.close()
    before = _snapshot(tmp_path)
    with pytest.raises(StoreOpenError, match="not ds_trio's"):
        await LmdbStore.open(tmp_path)
    assert _snapshot(tmp_path) == before


async def test_another_layout_version_is_refused_untouched(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path)
    await store.aclose()
    env = lmdb.open(str(tmp_path), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"info")) as txn:
        txn.put(b"layout", b"99")
    env.close()
    before = _snapshot(tmp_path)
    with pytest.raises(StoreOpenError, match="layout 99"):
        await LmdbStore.open(tmp_path)
    assert _snapshot(tmp_path) == before


async def test_a_file_is_not_a_data_dir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreOpenError, match="not a directory"):
        await LmdbStore.open(target)


class _Recorder:
    """Wraps an lmdb object, noting the thread of every call made through it."""

    def __init__(self, target: Any, threads: set[int]) -> None:
        self._target = target
        self._threads = threads

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, lmdb.Transaction | lmdb.Cursor):
            return _Recorder(value, self._threads)
        return value

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._threads.add(threading.get_ident())
            return self._wrap(attribute(*args, **kwargs))

        return call

    def __enter__(self) -> _Recorder:
        self._threads.add(threading.get_ident())
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        self._threads.add(threading.get_ident())
        return self._target.__exit__(*exc)

    def __iter__(self) -> Any:
        self._threads.add(threading.get_ident())
        return iter(self._target)


async def test_no_lmdb_call_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path, map_size=128 * 1024)
    threads: set[int] = set()
    store._env = _Recorder(store._env, threads)  # type: ignore[assignment]
    await store.create("s", CreateRequest("text/plain", "text/plain", ttl=60), NOW)
    for i in range(20):  # enough to grow the map too
        await store.append("s", text(os.urandom(16 * 1024).hex().encode(), stream_seq=b"%03d" % i), NOW)
    await store.read("s", 0, 1 << 20, NOW)
    await store.head("s", NOW)
    await store.expire(NOW + 3600)
    await store.aclose()
    assert threads, "the recorder saw no calls"
    assert threading.get_ident() not in threads


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path)
    try:
        for i in range(5):
            await store.create(f"s{i}", TEXT, NOW)
        commits_before = store.commits
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(store.append, f"s{n % 5}", text(b"%d," % n), NOW)
        assert store.commits - commits_before < 20
        total = b"".join([await read_all(store, f"s{i}") for i in range(5)])
        assert sorted(total.split(b",")[:-1] if total.endswith(b",") else total.split(b",")) == sorted(
            b"%d" % n for n in range(100)
        )
    finally:
        await store.aclose()


class InjectedFault(Exception):
    """Raised by the test's fault hook."""


@pytest.mark.parametrize("step", ["before_commit", "during_commit", "after_commit"])
async def test_a_fault_at_any_step_leaves_the_store_consistent(tmp_path: Path, step: str) -> None:
    store = await LmdbStore.open(tmp_path)
    try:
        await store.create("s", TEXT, NOW)
        await store.append("s", text(b"a", producer=ProducerClaim("p", 0, 0)), NOW)

        def fail(at: str) -> None:
            if at == step:
                raise InjectedFault(at)

        store.fault_hook = fail
        with pytest.raises(StorageFailure):
            await store.append("s", text(b"b", producer=ProducerClaim("p", 0, 1)), NOW)
        store.fault_hook = None

        committed = step == "after_commit"
        assert await read_all(store, "s") == (b"ab" if committed else b"a")
        retry = await store.append("s", text(b"b", producer=ProducerClaim("p", 0, 1)), NOW)
        assert retry.appended is not committed  # 200 if it was lost, 204 if it landed
        assert await read_all(store, "s") == b"ab"
        await store.aclose()

        reopened = await LmdbStore.open(tmp_path)
        assert await read_all(reopened, "s") == b"ab"
        store = reopened
    finally:
        await store.aclose()


async def test_running_out_of_disk_is_507_and_reads_go_on(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path)
    try:
        await store.create("s", TEXT, NOW)
        await store.append("s", text(b"kept"), NOW)

        def disk_full(at: str) -> None:
            if at == "during_commit":
                raise lmdb.DiskError("mdb_txn_commit: No space left on device")

        store.fault_hook = disk_full
        with pytest.raises(StorageFull):
            await store.append("s", text(b"lost"), NOW)
        assert await read_all(store, "s") == b"kept"
        store.fault_hook = None
        await store.append("s", text(b"+more"), NOW)
        assert await read_all(store, "s") == b"kept+more"
    finally:
        await store.aclose()


LARGE = 64 * 1024 * 1024


async def test_readers_never_see_part_of_a_large_append(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path, map_size=512 * 1024 * 1024)
    try:
        await store.create("s", BINARY, NOW)
        await store.append("s", binary(b"h" * 10), NOW)
        payload = b"x" * LARGE
        seen_tails: set[int] = set()
        appended = trio.Event()

        async def reader() -> None:
            for _ in range(10_000):
                result = await store.read("s", 0, 1 << 20, NOW)
                seen_tails.add(result.meta.tail)
                assert result.pieces[0][:10] == b"h" * 10
                if appended.is_set():
                    return

        async def writer() -> None:
            await store.append("s", binary(payload), NOW)
            appended.set()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(reader)
                nursery.start_soon(writer)
        assert seen_tails <= {10, 10 + LARGE}
        final = await store.read("s", 10 + LARGE - 5, 100, NOW)
        assert b"".join(final.pieces) == b"xxxxx"
    finally:
        await store.aclose()


async def test_the_loop_stays_responsive_while_a_large_append_commits(tmp_path: Path) -> None:
    store = await LmdbStore.open(tmp_path, map_size=512 * 1024 * 1024)
    try:
        await store.create("big", BINARY, NOW)
        await store.create("other", TEXT, NOW)
        in_commit = threading.Event()
        release = threading.Event()

        def hold_commit(at: str) -> None:
            if at == "during_commit" and not release.is_set():
                in_commit.set()
                release.wait(60)

        store.fault_hook = hold_commit
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append, "big", binary(b"y" * LARGE), NOW)
                await trio.to_thread.run_sync(in_commit.wait, 60)
                # The 64 MiB transaction is open in a worker thread; the loop serves on.
                with trio.fail_after(5):
                    meta = await store.head("other", NOW)
                    await store.read("other", 0, 10, NOW)
                    await trio.sleep(0.01)
                assert meta.tail == 0
                release.set()
        assert (await store.head("big", NOW)).tail == LARGE
    finally:
        await store.aclose()


async def test_a_second_server_cannot_take_a_data_dir_in_use(tmp_path: Path) -> None:
    first = await LmdbStore.open(tmp_path)
    try:
        with pytest.raises(StoreOpenError, match=f"in use by another ds_trio server \\(pid {os.getpid()}\\)"):
            await LmdbStore.open(tmp_path)
        await first.create("s", TEXT, NOW)  # the owner is unaffected
    finally:
        await first.aclose()
    second = await LmdbStore.open(tmp_path)  # free again once the owner closed it
    try:
        assert (await second.head("s", NOW)).tail == 0
    finally:
        await second.aclose()
