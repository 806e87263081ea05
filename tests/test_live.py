"""StreamWatchers: wake-ups, and the store reads that readers woken together share."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ds_trio.live import StreamWatchers


class CountingFetch:
    """A fetch that counts its calls and holds until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = trio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        return f"value {self.calls}"


async def test_readers_of_one_generation_share_one_fetch() -> None:
    watchers = StreamWatchers()
    fetch = CountingFetch()
    results: list[str] = []

    async def reader() -> None:
        with watchers.watch("s") as change:
            results.append(await change.read_once(7, fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        fetch.release.set()
    assert fetch.calls == 1
    assert results == ["value 1"] * 100


async def test_a_notify_starts_a_generation_that_fetches_afresh() -> None:
    watchers = StreamWatchers()
    fetch = CountingFetch()
    fetch.release.set()
    with watchers.watch("s") as change:
        assert await change.read_once(0, fetch) == "value 1"
        assert await change.read_once(0, fetch) == "value 1"
    with watchers.watch("s") as before, watchers.watch("s") as still_before:
        watchers.notify("s")
        with watchers.watch("s") as after:
            assert await after.read_once(0, fetch) == "value 2"
        assert before.changed and still_before.changed


async def test_different_keys_fetch_separately() -> None:
    watchers = StreamWatchers()
    fetch = CountingFetch()
    fetch.release.set()
    with watchers.watch("s") as change:
        assert await change.read_once(0, fetch) == "value 1"
        assert await change.read_once(10, fetch) == "value 2"
    with watchers.watch("other") as change:
        assert await change.read_once(0, fetch) == "value 3"


async def test_a_failed_fetch_is_not_shared() -> None:
    watchers = StreamWatchers()
    started = trio.Event()
    fail = trio.Event()
    calls = 0

    async def failing_then_fine() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await fail.wait()
            raise RuntimeError("store went away")
        return "fresh"

    outcomes: list[object] = []

    async def reader() -> None:
        with watchers.watch("s") as change:
            try:
                outcomes.append(await change.read_once(0, failing_then_fine))
            except RuntimeError as exc:
                outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await started.wait()
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        fail.set()
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1] == "fresh"
    assert calls == 2


async def test_a_cancelled_fetch_hands_over_to_a_waiting_reader() -> None:
    watchers = StreamWatchers()
    fetch = CountingFetch()
    got: list[str] = []

    async def reader() -> None:
        with watchers.watch("s") as change:
            got.append(await change.read_once(0, fetch))

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as first:
            async with trio.open_nursery() as inner:
                inner.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                assert fetch.calls == 1
                first.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert fetch.calls == 2 and got == []  # the waiting reader fetches for itself
        fetch.release.set()
    assert got == ["value 2"]
    assert watchers.statistics().total == 0


@pytest.mark.parametrize("closed_first", [False, True])
async def test_close_wakes_watchers_now_and_later(closed_first: bool) -> None:
    watchers = StreamWatchers()
    if closed_first:
        watchers.close()
    with watchers.watch("s") as change:
        if not closed_first:
            assert not change.changed
            watchers.close()
        with trio.fail_after(1):
            await change.wait()
    assert watchers.closed
