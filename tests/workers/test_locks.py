"""The data dir's owner lock (one server, many processes) and the leader lock.

flock belongs to an open file, so two opens in one process contend exactly
as two processes would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from ds_trio.store.lmdb_env import OWNER_LOCK, StoreOpenError, claim_data_dir
from ds_trio.workers.leader import LeaderLock, read_leader


def test_the_workers_of_one_server_share_a_data_dir_and_others_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = claim_data_dir(data, server=111)
    second = claim_data_dir(data, server=111)
    with pytest.raises(StoreOpenError, match=r"in use by another ds_trio server \(pid 111\)"):
        claim_data_dir(data, server=222)
    os.close(first)
    with pytest.raises(StoreOpenError, match="pid 111"):  # one of its processes still runs
        claim_data_dir(data, server=222)
    os.close(second)
    third = claim_data_dir(data, server=222)  # the old server is gone: the dir is free
    assert (data / OWNER_LOCK).read_text() == "222\n"
    os.close(third)


def test_a_foreign_directory_is_refused_before_any_lock(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreOpenError, match="not empty"):
        claim_data_dir(tmp_path, server=1)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_data_dir_that_cannot_be_created_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreOpenError, match=r"cannot use .*file/data: Not a directory"):
        claim_data_dir(tmp_path / "file" / "data", server=1)


async def test_leadership_passes_to_a_waiting_worker_when_the_leader_goes(tmp_path: Path) -> None:
    leader, follower = LeaderLock(tmp_path), LeaderLock(tmp_path)
    assert leader.try_acquire()
    assert not follower.try_acquire()
    leader.publish({"pid": 1, "url": "http://127.0.0.1:1", "secret": "s"})
    assert read_leader(tmp_path) == {"pid": 1, "url": "http://127.0.0.1:1", "secret": "s"}
    async with trio.open_nursery() as nursery:
        took_over = trio.Event()

        async def wait() -> None:
            await follower.acquire()
            took_over.set()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert not took_over.is_set()
        leader.close()  # what the kernel does when the leader's process dies
        with trio.fail_after(5):
            await took_over.wait()
    assert follower.held
    follower.close()


async def test_waiting_for_leadership_can_be_cancelled(tmp_path: Path) -> None:
    leader, follower = LeaderLock(tmp_path), LeaderLock(tmp_path)
    assert leader.try_acquire()
    with trio.move_on_after(0.05) as scope:
        await follower.acquire()
    assert scope.cancelled_caught and not follower.held
    follower.close()
    leader.close()


def test_no_leader_info_reads_as_none(tmp_path: Path) -> None:
    assert read_leader(tmp_path) is None
    (tmp_path / "ds_trio.leader.json").write_text("{not json")
    assert read_leader(tmp_path) is None
