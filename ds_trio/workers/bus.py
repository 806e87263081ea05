"""The peer bus: small datagrams between the worker processes of one server.

Each worker binds a Unix datagram socket in the abstract namespace, named
after the data dir and its peer id, and registers itself with a file in
`<data dir>/ds_trio.peers/`. A new worker lists that directory and says hello
to every worker it finds; a worker learns of later ones from their hellos.
Whichever of two workers registers second sees the first's file, so every
pair knows each other without polling.

Events are (kind, name) pairs. `publish` never blocks: it queues the event
for every peer, and one sender task per peer drains its queue into as few
datagrams as fit, so a burst of appends to one stream costs one datagram.
A peer whose socket is gone (the process died) is dropped, and its file
removed. The bus carries hints, never data: a lost datagram delays a wake-up,
and the store stays the source of truth.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

__all__ = ["PEERS_DIR", "PeerBus", "PendingEvents", "decode_events", "encode_events", "read_peers"]

log = logging.getLogger("ds_trio.workers")

PEERS_DIR: Final = "ds_trio.peers"
HELLO: Final = "H"
MAX_DATAGRAM: Final = 60_000  # bytes; well under the kernel's limit for Unix datagrams
_LENGTH: Final = struct.Struct(">I")
_GONE: Final = (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTCONN, errno.EPIPE)


def encode_events(events: Iterable[tuple[str, str]]) -> list[bytes]:
    """Datagrams carrying `events` in order: each is kind (1 byte), length, UTF-8 name."""
    datagrams: list[bytes] = []
    current = bytearray()
    for kind, name in events:
        encoded = name.encode("utf-8")
        entry = kind.encode("ascii") + _LENGTH.pack(len(encoded)) + encoded
        if current and len(current) + len(entry) > MAX_DATAGRAM:
            datagrams.append(bytes(current))
            current = bytearray()
        current += entry
    if current:
        datagrams.append(bytes(current))
    return datagrams


def decode_events(datagram: bytes) -> list[tuple[str, str]]:
    """The events of one datagram.

    Raises:
        ValueError: the datagram is truncated or not of this format.
    """
    events: list[tuple[str, str]] = []
    position = 0
    while position < len(datagram):
        if position + 1 + _LENGTH.size > len(datagram):
            raise ValueError("truncated event header")
        kind = chr(datagram[position])
        (length,) = _LENGTH.unpack_from(datagram, position + 1)
        start = position + 1 + _LENGTH.size
        if start + length > len(datagram):
            raise ValueError("truncated event name")
        events.append((kind, datagram[start : start + length].decode("utf-8")))
        position = start + length
    return events


_UCRED: Final = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE: Final = socket.CMSG_SPACE(_UCRED.size)


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            return _UCRED.unpack_from(data)[1]
    return None


def read_peers(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The registered workers of `data_dir`: peer id -> what each published about itself."""
    peers: dict[str, dict[str, Any]] = {}
    try:
        names = os.listdir(data_dir / PEERS_DIR)
    except FileNotFoundError:
        return peers
    for name in names:
        if name.endswith(".json") and name[:-5].isdigit():
            try:
                peers[name[:-5]] = json.loads((data_dir / PEERS_DIR / name).read_text())
            except (OSError, ValueError):
                continue  # being written or removed
    return peers


class PendingEvents:
    """Events waiting for one consumer: deduplicated, in the order of their latest arrival."""

    __slots__ = ("_events", "_ready")

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], None] = {}
        self._ready = trio.Event()

    def add(self, kind: str, name: str) -> None:
        key = (kind, name)
        self._events.pop(key, None)  # re-queued at the end: the latest order counts
        self._events[key] = None
        self._ready.set()

    async def take(self) -> list[tuple[str, str]]:
        """Wait for events, then take every one queued so far."""
        await self._ready.wait()
        self._ready = trio.Event()
        events, self._events = list(self._events), {}
        return events


class _Peer:
    __slots__ = ("address", "pending")

    def __init__(self, address: bytes) -> None:
        self.address = address
        self.pending = PendingEvents()


class PeerBus:
    """This worker's end of the bus: `publish` to the others, `on_event` for theirs."""

    def __init__(
        self,
        data_dir: Path,
        on_event: Callable[[str, str], None],
        *,
        peer_id: str | None = None,
    ) -> None:
        self.peer_id = peer_id or str(os.getpid())
        self._dir = data_dir / PEERS_DIR
        stat = os.stat(data_dir)
        self._namespace = f"ds_trio/{stat.st_dev:x}:{stat.st_ino:x}/"
        self._on_event = on_event
        self._peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def peers(self) -> list[str]:
        """The peer ids this worker currently sends to."""
        return sorted(self._peers)

    def _address(self, peer_id: str) -> bytes:
        return b"\0" + (self._namespace + peer_id).encode()

    def publish(self, kind: str, name: str) -> None:
        """Queue the event (`kind` is one ASCII letter) for every other worker."""
        for peer in self._peers.values():
            peer.pending.add(kind, name)

    async def run(
        self, about: dict[str, Any], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Join the bus, publishing `about` in the registry; serve until cancelled."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        registration = self._dir / f"{self.peer_id}.json"
        try:
            await sock.bind(self._address(self.peer_id))
            known = await trio.to_thread.run_sync(self._register, registration, about)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                [hello] = encode_events([(HELLO, self.peer_id)])
                for peer_id in known:
                    if peer_id != self.peer_id:
                        self._add(peer_id)
                        # Sent before this worker serves, not queued: the peer then
                        # has it before any reader here can wait on the peer's appends.
                        with contextlib.suppress(OSError):  # gone: its sender finds out
                            await sock.sendto(hello, self._address(peer_id))
                task_status.started()
                await self._receive(sock)
        finally:
            self._nursery = None
            registration.unlink(missing_ok=True)  # a cancelled task cannot wait for a thread
            sock.close()

    def _register(self, registration: Path, about: dict[str, Any]) -> list[str]:
        """Publish `about` as this worker's registration; the workers registered (thread)."""
        self._dir.mkdir(exist_ok=True)
        temporary = registration.with_suffix(".tmp")
        temporary.write_text(json.dumps(about))
        temporary.replace(registration)
        return list(read_peers(self._dir.parent))

    def _add(self, peer_id: str) -> _Peer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = self._peers[peer_id] = _Peer(self._address(peer_id))
            assert self._nursery is not None
            self._nursery.start_soon(self._send_to, peer_id, peer)
        return peer

    async def _receive(self, sock: trio.socket.SocketType) -> None:
        # Abstract sockets have no file permissions: the kernel's credentials on
        # each datagram say who sent it, and only this user's processes count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        uid = os.getuid()
        while True:
            datagram, ancillary, _, _ = await sock.recvmsg(MAX_DATAGRAM + 1024, _CREDENTIALS_SPACE)
            sender = _sender_uid(ancillary)
            if sender != uid:
                log.warning("ignoring a peer datagram from uid %s", sender)
                continue
            try:
                events = decode_events(datagram)
            except ValueError as exc:  # also UnicodeDecodeError
                log.warning("ignoring a malformed peer datagram: %s", exc)
                continue
            for kind, name in events:
                if kind != HELLO:
                    self._on_event(kind, name)
                elif name != self.peer_id and name.isdigit():  # a pid: it names a file and a socket
                    self._add(name)

    async def _send_to(self, peer_id: str, peer: _Peer) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await sock.connect(peer.address)
            while True:
                for datagram in encode_events(await peer.pending.take()):
                    await sock.send(datagram)  # waits while the peer's queue is full
        except OSError as exc:
            if self._peers.get(peer_id) is peer:
                del self._peers[peer_id]
            if exc.errno not in _GONE:
                log.warning("no longer relaying to worker %s: %s", peer_id, exc)
                return
            log.info("worker %s has gone; no longer relaying to it", peer_id)
            registration = self._dir / f"{peer_id}.json"
            await trio.to_thread.run_sync(partial(registration.unlink, missing_ok=True))
        finally:
            sock.close()
