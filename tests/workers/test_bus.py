"""The peer bus, in one process: several buses on one data dir stand in for workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from ds_trio.workers.bus import MAX_DATAGRAM, PEERS_DIR, PeerBus, decode_events, encode_events, read_peers


def test_events_round_trip_in_order_across_datagrams() -> None:
    events = [("N", f"stream/{i}/" + "x" * 500) for i in range(300)] + [("A", "ünïcode"), ("D", "")]
    datagrams = encode_events(events)
    assert len(datagrams) > 1 and all(len(d) <= MAX_DATAGRAM for d in datagrams)
    assert [e for d in datagrams for e in decode_events(d)] == events


@pytest.mark.parametrize("datagram", [b"N", b"N\x00\x00\x00\x05abc", b"N\x00\x00\x00\x01\xff"])
def test_a_truncated_or_garbled_datagram_is_refused(datagram: bytes) -> None:
    with pytest.raises(ValueError):
        decode_events(datagram)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.changed = trio.Event()

    def __call__(self, kind: str, name: str) -> None:
        self.events.append((kind, name))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> list[tuple[str, str]]:
        with trio.fail_after(5):
            while len(self.events) < count:
                await self.changed.wait()
        return self.events


async def _start(nursery: trio.Nursery, data: Path, peer_id: str) -> tuple[PeerBus, Recorder, trio.CancelScope]:
    recorder = Recorder()
    bus = PeerBus(data, recorder, peer_id=peer_id)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await bus.run({"pid": os.getpid(), "url": f"http://{peer_id}"}, task_status=task_status)

    await nursery.start(run)
    return bus, recorder, scope


async def _until_peers(bus: PeerBus, expected: list[str]) -> None:
    """Let every datagram in flight be handled (all tasks blocked), then check."""
    with trio.fail_after(5):
        await trio.testing.wait_all_tasks_blocked()
    assert bus.peers == expected


async def _until_unregistered(data: Path, peer_id: str) -> None:
    """The bus removes a dead peer's file in a worker thread, which no task waits on."""
    with trio.fail_after(5):
        while peer_id in read_peers(data):
            await trio.sleep(0.005)


async def test_workers_find_each_other_and_relay_events(tmp_path: Path, nursery: trio.Nursery) -> None:
    first, first_seen, _ = await _start(nursery, tmp_path, "1")
    second, second_seen, _ = await _start(nursery, tmp_path, "2")
    third, third_seen, _ = await _start(nursery, tmp_path, "3")
    await _until_peers(first, ["2", "3"])
    assert second.peers == ["1", "3"] and third.peers == ["1", "2"]
    assert set(read_peers(tmp_path)) == {"1", "2", "3"}

    second.publish("N", "a")
    second.publish("A", "a")
    assert await first_seen.wait_for(2) == [("N", "a"), ("A", "a")]
    assert await third_seen.wait_for(2) == [("N", "a"), ("A", "a")]
    assert second_seen.events == []  # never to itself


async def test_a_burst_is_coalesced_and_keeps_the_latest_order(tmp_path: Path, nursery: trio.Nursery) -> None:
    first, _, _ = await _start(nursery, tmp_path, "1")
    second, seen, _ = await _start(nursery, tmp_path, "2")
    await _until_peers(first, ["2"])
    for _ in range(1000):
        first.publish("N", "hot")
    first.publish("D", "gone")
    first.publish("N", "hot")
    events = await seen.wait_for(2)
    await trio.testing.wait_all_tasks_blocked()
    assert events == [("D", "gone"), ("N", "hot")]


async def test_a_dead_worker_is_dropped_and_unregistered(tmp_path: Path, nursery: trio.Nursery) -> None:
    first, _, _ = await _start(nursery, tmp_path, "1")
    _, _, second_scope = await _start(nursery, tmp_path, "2")
    await _until_peers(first, ["2"])
    second_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    (tmp_path / PEERS_DIR / "2.json").write_text("{}")  # as if it had been killed, file left behind
    first.publish("N", "s")
    await _until_peers(first, [])
    await _until_unregistered(tmp_path, "2")


async def test_a_stale_registration_is_cleared_when_a_worker_starts(tmp_path: Path, nursery: trio.Nursery) -> None:
    (tmp_path / PEERS_DIR).mkdir()
    (tmp_path / PEERS_DIR / "99999999.json").write_text('{"pid": 99999999}')
    bus, _, _ = await _start(nursery, tmp_path, "1")
    await _until_peers(bus, [])
    await _until_unregistered(tmp_path, "99999999")


async def test_a_malformed_datagram_is_ignored(tmp_path: Path, nursery: trio.Nursery) -> None:
    import socket

    first, seen, _ = await _start(nursery, tmp_path, "1")
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw.sendto(b"N\x00\x00\x00\x09ab", first._address("1"))
    raw.sendto(encode_events([("N", "ok")])[0], first._address("1"))
    raw.close()
    assert await seen.wait_for(1) == [("N", "ok")]


async def test_a_hello_whose_id_is_not_a_pid_is_ignored(tmp_path: Path, nursery: trio.Nursery) -> None:
    import socket

    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    first, seen, _ = await _start(nursery, tmp_path, "1")
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw.sendto(encode_events([("H", "../victim"), ("N", "after")])[0], first._address("1"))
    raw.close()
    assert await seen.wait_for(1) == [("N", "after")]
    await _until_peers(first, [])
    assert victim.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="sending as another user needs root (CI runs as root)")
async def test_datagrams_from_another_user_are_ignored(tmp_path: Path, nursery: trio.Nursery) -> None:
    import socket

    first, seen, _ = await _start(nursery, tmp_path, "1")
    address = first._address("1")
    forged = encode_events([("N", "from-nobody")])[0]
    child = os.fork()
    if child == 0:  # only system calls, then out: no trio, no Python teardown in the child
        try:
            os.setuid(65534)
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            raw.sendto(forged, address)
        finally:
            os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw.sendto(encode_events([("N", "from-us")])[0], address)
    raw.close()
    assert await seen.wait_for(1) == [("N", "from-us")]  # the forged one came first, and was dropped
    await trio.testing.wait_all_tasks_blocked()
    assert seen.events == [("N", "from-us")]
