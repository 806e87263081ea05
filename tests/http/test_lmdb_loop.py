"""Over HTTP with the LMDB store: the event loop keeps serving while a 64 MiB
append's transaction is open in a worker thread."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import trio

from ds_trio.store.lmdb import LmdbStore

from ..conftest import start_server

LARGE = 64 * 1024 * 1024


async def test_head_and_long_poll_answer_while_a_large_append_commits(
    nursery: trio.Nursery, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    server = await start_server(
        nursery, data_dir=str(tmp_path / "data"), long_poll_timeout="300ms", max_append_bytes="80MiB"
    )
    store = server.service.store
    assert isinstance(store, LmdbStore)
    octet = {"Content-Type": "application/octet-stream"}
    assert (await client.put(server.url("big"), headers=octet)).status_code == 201
    other = await client.put(server.url("other"), headers={"Content-Type": "text/plain"}, content=b"x")
    tail = other.headers["stream-next-offset"]

    in_commit, release = threading.Event(), threading.Event()

    def hold_commit(step: str) -> None:
        if step == "during_commit" and not release.is_set():
            in_commit.set()
            release.wait(60)

    store.fault_hook = hold_commit
    big_status: list[tuple[int, str]] = []

    async def big_append() -> None:
        response = await client.post(
            server.url("big"), headers=octet, content=b"z" * LARGE, timeout=120
        )
        big_status.append((response.status_code, response.headers["stream-next-offset"]))

    with trio.fail_after(120):
        async with trio.open_nursery() as appending:
            appending.start_soon(big_append)
            await trio.to_thread.run_sync(in_commit.wait, 60)
            with trio.fail_after(5):  # the transaction is still open
                head = await client.head(server.url("other"))
                poll = await client.get(
                    server.url("other"), params={"offset": tail, "live": "long-poll"}
                )
            assert not release.is_set() and big_status == []
            assert head.status_code == 200
            assert poll.status_code == 204 and poll.headers["stream-next-offset"] == tail
            release.set()
    [(status, next_offset)] = big_status
    assert status == 204
    meta = await client.head(server.url("big"))
    assert meta.headers["stream-next-offset"] == next_offset
    catch_up = await client.get(server.url("big"), params={"offset": "-1"})
    assert len(catch_up.content) == server.service.config.max_read_bytes
